//! The simulator of `streamstock all`, behind the switch the dashboard
//! turns (`/api/simulator`, see gateway::simulator_control).

use crate::gateway::simulator_control::{DashboardProfile, SimulatorSwitch};
use crate::simulator::{Profile, Simulator};
use std::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct InProcessSimulator {
    target: String,
    trust: crate::simulator::trust::GatewayTrust,
    token: Option<secrecy::SecretString>,
    /// The process's shutdown: every run stops with it.
    shutdown: CancellationToken,
    current: Mutex<Option<Run>>,
}

struct Run {
    profile: DashboardProfile,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl InProcessSimulator {
    pub fn new(
        target: String,
        trust: crate::simulator::trust::GatewayTrust,
        token: Option<secrecy::SecretString>,
        shutdown: CancellationToken,
    ) -> Self {
        InProcessSimulator {
            target,
            trust,
            token,
            shutdown,
            current: Mutex::new(None),
        }
    }

    /// Waits for the running simulator, if any, to finish (after shutdown).
    pub async fn finish(&self) {
        let run = self.current.lock().expect("simulator lock").take();
        if let Some(run) = run {
            run.stop.cancel();
            let _ = run.task.await;
        }
    }
}

impl SimulatorSwitch for InProcessSimulator {
    fn running(&self) -> Option<DashboardProfile> {
        let current = self.current.lock().expect("simulator lock");
        current
            .as_ref()
            .filter(|run| !run.task.is_finished())
            .map(|run| run.profile)
    }

    fn start(&self, wanted: DashboardProfile) {
        self.stop();
        let profile = match wanted {
            DashboardProfile::Normal => Profile::Normal,
            DashboardProfile::Burst => Profile::Burst,
            DashboardProfile::Checkout => Profile::Checkout,
        };
        let simulator = Simulator::new(
            &self.target,
            self.token.clone(),
            profile,
            self.trust.clone(),
        );
        let stop = self.shutdown.child_token();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            simulator.run(token).await;
        });
        tracing::info!(profile = wanted.as_str(), "simulator started");
        *self.current.lock().expect("simulator lock") = Some(Run {
            profile: wanted,
            stop,
            task,
        });
    }

    /// The stopped run ends on its own (its requests in flight finish).
    fn stop(&self) {
        if let Some(run) = self.current.lock().expect("simulator lock").take() {
            run.stop.cancel();
            tracing::info!(profile = run.profile.as_str(), "simulator stopped");
        }
    }
}
