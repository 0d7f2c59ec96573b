//! SIGHUP reads settings files again without a restart: the tokens (and,
//! on a TLS listener, its certificate). What fails to read leaves what is
//! in force, with an error in the log, so a typo never locks everyone out.

use crate::gateway::auth::Tokens;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs `reload` on every SIGHUP until `shutdown`.
pub fn on_sighup(shutdown: CancellationToken, reload: impl Fn() + Send + 'static) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler: settings files are read only at start-up");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                heard = hangups.recv() => match heard {
                    Some(()) => reload(),
                    None => return,
                },
            }
        }
    });
}

/// Reads the tokens again on SIGHUP.
pub fn tokens_on_sighup(tokens: Arc<Tokens>, shutdown: CancellationToken) {
    on_sighup(shutdown, move || match tokens.reload() {
        Ok(count) => tracing::info!(tokens = count, "tokens reloaded (SIGHUP)"),
        Err(error) => {
            tracing::error!(%error, "tokens not reloaded; the previous ones stay in force")
        }
    });
}

/// Reads a listener's certificate again on SIGHUP (it is also read when
/// its files change, see http_server::tls).
pub fn certificate_on_sighup(
    options: &crate::http_server::ServerOptions,
    shutdown: CancellationToken,
) {
    let Some(tls) = &options.tls else { return };
    let (certificate, listener) = (tls.certificate.clone(), options.listener);
    on_sighup(shutdown, move || {
        certificate.reload_and_log(listener, "SIGHUP")
    });
}
