//! Announcements across processes (see `stream::announce`): a worker
//! PUBLISHes each committed batch's status changes on
//! `<namespace>:announcements`; a gateway subscribes on a connection of its
//! own, which fred's SubscriberClient re-subscribes after a reconnect, and
//! hands what it hears to its local receivers.

use super::ValkeyLog;
use crate::retry::Backoff;
use crate::stream::announce::{Announcement, StatusChange};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use std::time::Duration;
use tokio::sync::broadcast;

impl ValkeyLog {
    fn announcement_channel(&self) -> String {
        format!("{}:announcements", self.namespace)
    }

    /// PUBLISHes without making the worker wait for the answer. An empty
    /// one is published too: it says the archive grew (the feed's wake).
    pub(super) fn publish_announcement(&self, changes: Announcement) {
        let client = self.client.clone();
        let channel = self.announcement_channel();
        let json = serde_json::to_string(&*changes).expect("status changes serialize");
        tokio::spawn(async move {
            if let Err(e) = client.publish::<i64, _, _>(channel, json).await {
                tracing::debug!(error = %e, "an announcement was not published");
            }
        });
    }

    /// Starts this process's subscription on the first call.
    pub(super) fn subscribe_announcements(&self) -> broadcast::Receiver<Announcement> {
        let receiver = self.announcements.subscribe();
        self.subscribed.get_or_init(|| {
            tokio::spawn(listen(
                self.config.clone(),
                self.announcement_channel(),
                self.announcements.clone(),
            ));
        });
        receiver
    }
}

/// Subscribes (retrying until Valkey answers) and forwards every
/// announcement heard, for the life of the process.
async fn listen(
    config: Config,
    channel: String,
    local: crate::stream::announce::LocalAnnouncements,
) {
    let mut delays = Backoff {
        first: Duration::from_millis(100),
        max: Duration::from_secs(5),
    }
    .delays();
    let subscriber = loop {
        match subscribe(&config, &channel).await {
            Ok(subscriber) => break subscriber,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to announcements yet; long polls fall back to polling");
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    };
    let mut messages = subscriber.message_rx();
    loop {
        match messages.recv().await {
            Ok(message) => {
                let parsed = message
                    .value
                    .as_str()
                    .and_then(|text| serde_json::from_str::<Vec<StatusChange>>(&text).ok());
                match parsed {
                    Some(changes) => local.send(changes.into()),
                    None => {
                        tracing::debug!(channel = %message.channel, "an announcement did not parse")
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn subscribe(config: &Config, channel: &str) -> Result<SubscriberClient, Error> {
    let subscriber = Builder::from_config(config.clone())
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(5))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_subscriber_client()?;
    subscriber.init().await?;
    // A task that re-subscribes after every reconnect (detached: it lives
    // as long as the subscriber).
    drop(subscriber.manage_subscriptions());
    subscriber.subscribe(channel).await?;
    Ok(subscriber)
}
