//! `GET` and `POST /api/simulator`: the dashboard starts and stops the
//! simulator, and switches its profile, when it runs in the same process
//! (`streamstock all`). The gateway does not know the simulator (the
//! layers point one way): `all` hands it a `SimulatorSwitch`; `serve` has
//! none, and the routes say the simulator is not available here.

use super::error::ApiError;
use super::responses::ErrorBody;
use super::{ApiJson, AppState};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

crate::domain::status::named_enum! {
    /// The profiles the dashboard may pick (the load runs, `steady` and
    /// `max`, belong to `streamstock simulate`). The gateway's own type: it
    /// does not know the simulator (`all` maps these onto its profiles).
    pub enum DashboardProfile {
        Normal => "normal",
        Burst => "burst",
        /// Checkouts: holds, most paid, some abandoned to expire.
        Checkout => "checkout",
    }
}

/// The simulator's controls, implemented where the simulator is known.
pub trait SimulatorSwitch: Send + Sync + 'static {
    /// The running profile, or None when stopped.
    fn running(&self) -> Option<DashboardProfile>;
    /// Stops what runs, then runs `profile`.
    fn start(&self, profile: DashboardProfile);
    fn stop(&self);
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimulatorState {
    /// Whether this process runs a simulator the page can control (`all`).
    pub available: bool,
    pub running: bool,
    /// The running profile.
    pub profile: Option<String>,
    /// The profiles `POST` accepts.
    pub profiles: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatorCommand {
    /// Start (true) or stop (false).
    pub running: bool,
    /// With `running: true`: `normal` or `burst` (default `normal`).
    pub profile: Option<String>,
}

fn state_of(state: &AppState) -> SimulatorState {
    let running = state.simulator.as_ref().and_then(|s| s.running());
    SimulatorState {
        available: state.simulator.is_some(),
        running: running.is_some(),
        profile: running.map(|p| p.as_str().to_string()),
        profiles: DashboardProfile::ALL
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
    }
}

#[utoipa::path(get, path = "/api/simulator", operation_id = "get_simulator", tag = "operations",
    responses((status = 200, description = "Whether the in-process simulator runs, and with which profile", body = SimulatorState)))]
#[tracing::instrument(name = "simulator_control::get", level = "debug", skip_all)]
pub async fn get(State(state): State<AppState>) -> Json<SimulatorState> {
    Json(state_of(&state))
}

#[utoipa::path(post, path = "/api/simulator", operation_id = "control_simulator", tag = "operations",
    request_body = SimulatorCommand,
    responses((status = 200, description = "The simulator's state after the command", body = SimulatorState),
        (status = 409, description = "No simulator runs in this process (only `streamstock all` has one)", body = ErrorBody),
        (status = 422, description = "An unknown profile", body = ErrorBody)))]
#[tracing::instrument(name = "simulator_control::control", level = "debug", skip_all)]
pub async fn control(
    State(state): State<AppState>,
    ApiJson(command): ApiJson<SimulatorCommand>,
) -> Result<Json<SimulatorState>, ApiError> {
    let Some(switch) = &state.simulator else {
        return Err(ApiError::conflict(
            "no simulator runs in this process: only `streamstock all` has one; run `streamstock simulate` against this gateway",
        ));
    };
    if command.running {
        let name = command.profile.as_deref().unwrap_or("normal");
        // In any case, as the reference's clients write them.
        let Some(profile) = DashboardProfile::parse(&name.to_ascii_lowercase()) else {
            let names: Vec<&str> = DashboardProfile::ALL.iter().map(|p| p.as_str()).collect();
            return Err(ApiError::invalid(
                "profile",
                format!("must be one of {}", names.join(", ")),
            ));
        };
        switch.start(profile);
    } else {
        switch.stop();
    }
    Ok(Json(state_of(&state)))
}
