//! Webhook subscriptions: created, paused, resumed, rewound and deleted as
//! events (subscription.*), delivered by the workers (`worker::deliverer`).
//! The secret is made here (unless given), stored beside the delivery
//! state, and shown once, in the answer to the creation.

use super::error::ApiError;
use super::extract::{page_limit, ApiJson, ApiQuery};
use super::long_poll::{until_decided, APPLIED_WAIT};
use super::responses::{ErrorBody, Stored};
use super::write_ids::WriteIds;
use super::AppState;
use crate::domain::events::{
    SubscriptionCreated, SubscriptionDeleted, SubscriptionPaused, SubscriptionResumed,
    SubscriptionRewound,
};
use crate::domain::webhooks::{check_url, AllowList};
use crate::domain::DomainEvent;
use crate::store::feed::TypeFilter;
use crate::store::subscriptions::{
    DeliveryAttempt, SubscriptionState, SubscriptionView, KEPT_DELIVERIES,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// How long the gateway waits for a subscription's host to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// Where a new subscription starts.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Start {
    /// `"now"` (the default: events from now on) or `"beginning"` (every
    /// event archived).
    Named(String),
    /// After this seq.
    Seq(i64),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateSubscription {
    /// Where events are POSTed: http:// or https://.
    pub url: String,
    /// Event types or families (`order.*`); absent or empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The HMAC key (16 to 256 characters); absent: one is made. It is
    /// shown in this answer only.
    pub secret: Option<String>,
    #[schema(value_type = Option<Object>, example = "now")]
    pub start: Option<Start>,
}

/// A new subscription, with its secret (shown this once).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionCreatedView {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    /// The seq after which events are delivered.
    pub start_after: i64,
    pub secret: String,
    /// The subscription as applied; null while a worker has yet to apply it.
    pub subscription: Option<SubscriptionView>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Rewind {
    /// Deliver again every matching event after this seq.
    pub seq: i64,
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

/// Refuses a URL whose host leads (now) to an address the allow-list
/// refuses; the deliverer checks again before every connection.
async fn check_destination(url: &url::Url, allow: &AllowList) -> Result<(), ApiError> {
    let refused = |why: String| ApiError::invalid("url", why);
    let addresses: Vec<std::net::IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => vec![v4.into()],
        Some(url::Host::Ipv6(v6)) => vec![v6.into()],
        Some(url::Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(443);
            let found = tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| {
                    refused(format!(
                        "{name} did not resolve within {} s",
                        RESOLVE_WITHIN.as_secs()
                    ))
                })?
                .map_err(|e| refused(format!("{name} does not resolve ({e})")))?;
            found.map(|a| a.ip()).collect()
        }
        None => return Err(refused("must name a host".into())),
    };
    for address in &addresses {
        if let Some(why) = allow.refusal(*address) {
            return Err(refused(format!(
                "{} leads to {address}, {why}: webhooks are not sent there unless --webhook-allow lists it",
                url.host_str().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// A secret for a subscription created without one: 32 random bytes.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// Subscribes a URL to the events.
#[utoipa::path(post, path = "/api/subscriptions", operation_id = "create_subscription", tag = "integrations",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created and applied; the secret is shown this once", body = SubscriptionCreatedView),
        (status = 202, description = "Created; a worker has yet to apply it (the secret is shown this once)", body = SubscriptionCreatedView),
        (status = 409, description = "The deployment has --max-subscriptions already", body = ErrorBody),
        (status = 422, description = "A bad URL (or one that leads where webhooks may not go), type, secret or start", body = ErrorBody)))]
#[tracing::instrument(name = "subscriptions::create", level = "debug", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<Stored<SubscriptionCreatedView>, ApiError> {
    let url = check_url(body.url.trim()).map_err(|e| ApiError::invalid("url", e))?;
    let types =
        TypeFilter::of(&body.event_types).map_err(|e| ApiError::invalid("event_types", e))?;
    if let Some(secret) = &body.secret {
        if !(16..=256).contains(&secret.chars().count()) {
            return Err(ApiError::invalid("secret", "must be 16 to 256 characters"));
        }
    }
    let head = state.store.feed_head().await?;
    let start_after = match &body.start {
        None => head,
        Some(Start::Named(name)) if name == "now" => head,
        Some(Start::Named(name)) if name == "beginning" => 0,
        Some(Start::Seq(seq)) if (0..=head).contains(seq) => *seq,
        Some(Start::Seq(seq)) => {
            return Err(ApiError::invalid(
                "start",
                format!("{seq} is not a seq of this archive (0 to {head})"),
            ))
        }
        Some(Start::Named(other)) => {
            return Err(ApiError::invalid(
                "start",
                format!("{other:?} must be \"now\", \"beginning\" or a seq"),
            ))
        }
    };
    check_destination(&url, &state.access.webhook_allow).await?;
    let id = ids.id("subscription");
    let existing = state.store.subscription_count().await?;
    let retry = state.store.get_subscription(id).await?.is_some();
    if !retry && existing >= state.access.max_subscriptions as i64 {
        return Err(ApiError::conflict(format!(
            "this deployment has {existing} subscriptions, the most --max-subscriptions allows"
        )));
    }
    let secret = body.secret.clone().unwrap_or_else(new_secret);
    let (secret, start_after) = state
        .store
        .create_subscription_progress(id, &secret, start_after)
        .await?;
    let event_types: Vec<String> = if types.is_all() {
        Vec::new()
    } else {
        body.event_types
            .iter()
            .map(|t| t.trim().to_string())
            .collect()
    };
    let event = DomainEvent::SubscriptionCreated(SubscriptionCreated {
        subscription_id: id,
        url: url.to_string(),
        event_types: event_types.clone(),
        start_after,
    })
    .into_envelope_with_id(ids.id("subscription.created"), Utc::now())
    .sent_by(ids.actor());
    state.append(&event).await?;
    let subscription = applied(&state, id, |_| true).await?;
    Ok(Stored {
        readable: subscription.is_some(),
        body: SubscriptionCreatedView {
            id,
            url: url.to_string(),
            event_types,
            start_after,
            secret,
            subscription,
        },
        location: format!("/api/subscriptions/{id}"),
    })
}

/// The subscriptions (without their secrets), oldest first.
#[utoipa::path(get, path = "/api/subscriptions", operation_id = "list_subscriptions", tag = "integrations",
    responses((status = 200, description = "Every subscription not deleted, with its cursor, lag and last error", body = Vec<SubscriptionView>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    Ok(Json(state.store.list_subscriptions().await?))
}

/// One subscription.
#[utoipa::path(get, path = "/api/subscriptions/{id}", operation_id = "get_subscription", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription")),
    responses((status = 200, description = "The subscription, its cursor, lag and last error", body = SubscriptionView),
        (status = 404, description = "No such subscription (or deleted)", body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(existing(&state, id).await?))
}

async fn existing(state: &AppState, id: Uuid) -> Result<SubscriptionView, ApiError> {
    match state.store.get_subscription(id).await? {
        Some(view) if view.state != SubscriptionState::Deleted => Ok(view),
        _ => Err(ApiError::not_found(format!("no subscription {id}"))),
    }
}

/// The subscription once `done` holds of it, waiting a few batches.
async fn applied(
    state: &AppState,
    id: Uuid,
    done: impl Fn(&SubscriptionView) -> bool,
) -> Result<Option<SubscriptionView>, ApiError> {
    let read = || async { Ok(state.store.get_subscription(id).await?) };
    let view = until_decided(state, Some(APPLIED_WAIT.as_secs()), true, read, &done).await?;
    Ok(view.filter(|v| done(v)))
}

/// 200 with the subscription once the change is applied; 202 with what is
/// known while a worker has yet to apply it.
fn changed(view: Option<SubscriptionView>, before: SubscriptionView) -> Response {
    match view {
        Some(view) => Json(view).into_response(),
        None => (StatusCode::ACCEPTED, Json(before)).into_response(),
    }
}

/// Stops delivering; the cursor is kept.
#[utoipa::path(post, path = "/api/subscriptions/{id}/pause", operation_id = "pause_subscription", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription")),
    responses((status = 200, description = "Paused", body = SubscriptionView),
        (status = 202, description = "Asked; a worker has yet to apply it", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    ids: WriteIds,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let before = existing(&state, id).await?;
    let event = DomainEvent::SubscriptionPaused(SubscriptionPaused {
        subscription_id: id,
        reason: Some("paused by an operator".into()),
        automatic: false,
    });
    append(&state, &ids, event).await?;
    let view = applied(&state, id, |v| v.state == SubscriptionState::Paused).await?;
    Ok(changed(view, before))
}

/// Delivers again, from the cursor.
#[utoipa::path(post, path = "/api/subscriptions/{id}/resume", operation_id = "resume_subscription", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription")),
    responses((status = 200, description = "Active", body = SubscriptionView),
        (status = 202, description = "Asked; a worker has yet to apply it", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    ids: WriteIds,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let before = existing(&state, id).await?;
    let event = DomainEvent::SubscriptionResumed(SubscriptionResumed {
        subscription_id: id,
    });
    append(&state, &ids, event).await?;
    let view = applied(&state, id, |v| v.state == SubscriptionState::Active).await?;
    Ok(changed(view, before))
}

/// Delivers again every matching event after `seq`.
#[utoipa::path(post, path = "/api/subscriptions/{id}/rewind", operation_id = "rewind_subscription", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription")),
    request_body = Rewind,
    responses((status = 202, description = "Asked; its deliverer takes it up within a second or so", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 422, description = "The seq is not one of this archive", body = ErrorBody)))]
pub async fn rewind(
    State(state): State<AppState>,
    ids: WriteIds,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<Rewind>,
) -> Result<Response, ApiError> {
    let before = existing(&state, id).await?;
    if !(0..=before.head).contains(&body.seq) {
        return Err(ApiError::invalid(
            "seq",
            format!(
                "{} is not a seq of this archive (0 to {})",
                body.seq, before.head
            ),
        ));
    }
    let event = DomainEvent::SubscriptionRewound(SubscriptionRewound {
        subscription_id: id,
        seq: body.seq,
    });
    append(&state, &ids, event).await?;
    Ok((StatusCode::ACCEPTED, Json(before)).into_response())
}

/// Deletes a subscription: nothing more is delivered.
#[utoipa::path(delete, path = "/api/subscriptions/{id}", operation_id = "delete_subscription", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription")),
    responses((status = 204, description = "Deleted"),
        (status = 202, description = "Asked; a worker has yet to apply it", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ids: WriteIds,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let before = existing(&state, id).await?;
    let event = DomainEvent::SubscriptionDeleted(SubscriptionDeleted {
        subscription_id: id,
    });
    append(&state, &ids, event).await?;
    match applied(&state, id, |v| v.state == SubscriptionState::Deleted).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Ok((StatusCode::ACCEPTED, Json(before)).into_response()),
    }
}

async fn append(state: &AppState, ids: &WriteIds, event: DomainEvent) -> Result<(), ApiError> {
    let kind = event.kind();
    let envelope = event
        .into_envelope_with_id(ids.id(kind.name()), Utc::now())
        .sent_by(ids.actor());
    state.append(&envelope).await?;
    Ok(())
}

/// The recent delivery attempts, newest first.
#[utoipa::path(get, path = "/api/subscriptions/{id}/deliveries", operation_id = "list_subscription_deliveries", tag = "integrations",
    params(("id" = Uuid, Path, description = "The subscription"),
        ("limit" = Option<i64>, Query, description = "Attempts, 1 to 1000 (default 100); the newest 100 are kept")),
    responses((status = 200, description = "The recent attempts with their status and latency", body = Vec<DeliveryAttempt>),
        (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryAttempt>>, ApiError> {
    existing(&state, id).await?;
    let limit = page_limit(query.limit)?.min(KEPT_DELIVERIES);
    Ok(Json(state.store.recent_deliveries(id, limit).await?))
}
