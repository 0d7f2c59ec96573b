//! Order routes: place (validate, price from the catalog, append
//! `order.placed`, 202; with a hold for a checkout), list and read, with an
//! optional long-poll, and the lifecycle commands cancel, ship and commit.

use super::catalog::Priced;
use super::error::ApiError;
use super::order_watch::FALLBACK_CHECK;
use super::responses::ErrorBody;
use super::responses::{Accepted, CommandQueued, FoundOrQueued, OrderPending, OrderQueued, Queued};
use super::write_ids::WriteIds;
use super::{ApiJson, ApiPath, ApiQuery, AppState, Paging, StatusFilter};
use crate::domain::catalog::{Email, Quantity};
use crate::domain::events::{OrderLine, OrderPlaced};
use crate::domain::inventory::{OrderCommand, OrderStatus};
use crate::domain::{DomainEvent, Money, OrderId, ProductId};
use crate::store::queries::OrderView;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Most lines one order may have.
const MAX_LINES: usize = 100;
/// Longest hold a checkout may ask for: a week.
const MAX_HOLD_TTL_S: i64 = 7 * 24 * 3600;
/// Longest long-poll a client may ask for.
const MAX_WAIT_SECS: u64 = 30;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_email: String,
    pub items: Vec<PlaceOrderItem>,
    /// Hold the stock for a checkout this many seconds (1 to 604800): the
    /// order is confirmed as HELD and expires, its stock released, unless
    /// committed (`POST /api/orders/{id}/commit`) in time.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub hold_ttl_s: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderItem {
    pub product_id: ProductId,
    pub quantity: i64,
    /// Optional; when given it must equal the catalog price.
    #[serde(default)]
    pub unit_price: Option<Money>,
}

#[derive(Debug, Deserialize)]
pub struct OneOrderQuery {
    /// Long-poll: wait up to this many seconds for a decision.
    pub wait: Option<u64>,
}

#[utoipa::path(post, path = "/api/orders", operation_id = "place_order", tag = "orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "The order is in the log; a worker confirms or rejects it", body = OrderQueued, headers(("Location" = String, description = "The order's URL"))),
        (status = 422, description = "A field is invalid, or a product unknown", body = ErrorBody)))]
#[tracing::instrument(name = "orders::place", level = "debug", skip_all)]
pub async fn place(
    State(state): State<AppState>,
    write_ids: WriteIds,
    ApiJson(body): ApiJson<PlaceOrder>,
) -> Result<Accepted<OrderQueued>, ApiError> {
    let customer_email =
        Email::parse(&body.customer_email).map_err(|e| ApiError::invalid("customer_email", e))?;
    if body.items.is_empty() {
        return Err(ApiError::invalid(
            "items",
            "an order needs at least one item",
        ));
    }
    if body.items.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "items",
            format!("at most {MAX_LINES} items per order"),
        ));
    }
    let hold_ttl = match body.hold_ttl_s {
        Some(ttl) if !(1..=MAX_HOLD_TTL_S).contains(&ttl) => {
            return Err(ApiError::invalid(
                "hold_ttl_s",
                format!("{ttl} is not a hold: from 1 to {MAX_HOLD_TTL_S} seconds"),
            ))
        }
        ttl => ttl.map(chrono::Duration::seconds),
    };
    let ids: Vec<ProductId> = body.items.iter().map(|item| item.product_id).collect();
    let catalog = priced(&state, &ids).await?;
    let mut lines = Vec::with_capacity(body.items.len());
    let mut total = Money::ZERO;
    for (i, item) in body.items.iter().enumerate() {
        let quantity = Quantity::parse(item.quantity)
            .map_err(|e| ApiError::invalid(&format!("items[{i}].quantity"), e))?;
        let product = catalog.get(&item.product_id).ok_or_else(|| {
            ApiError::invalid(
                &format!("items[{i}].product_id"),
                format!("unknown product {}", item.product_id),
            )
        })?;
        if let Some(given) = item.unit_price {
            if given != product.price {
                return Err(ApiError::invalid(
                    &format!("items[{i}].unit_price"),
                    format!(
                        "{given} does not match the catalog price {} of {}",
                        product.price, &*product.sku
                    ),
                ));
            }
        }
        total = total.plus(product.price.times(quantity.get()));
        lines.push(OrderLine {
            product_id: item.product_id,
            quantity: quantity.get(),
            unit_price: product.price,
        });
    }

    let order_id = OrderId(write_ids.id("order"));
    // Milliseconds, as the read model keeps times.
    let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
    let hold_until = hold_ttl.map(|ttl| now + ttl);
    let event = DomainEvent::OrderPlaced(OrderPlaced {
        order_id,
        customer_email: customer_email.into_string(),
        items: lines,
        total,
        hold_until,
    });
    let envelope = event
        .into_envelope_with_id(write_ids.id("order.placed"), now)
        .sent_by(write_ids.actor());
    let receipt = state.append(&envelope).await?;
    Ok(Accepted {
        body: OrderQueued {
            order_id,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
            total,
            hold_until,
        },
        location: Some(format!("/api/orders/{order_id}")),
    })
}

#[utoipa::path(get, path = "/api/orders", operation_id = "list_orders", tag = "orders",
    params(("status" = Option<OrderStatus>, Query, description = "Only orders in this status (any case)"), ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"), ("after" = Option<uuid::Uuid>, Query, description = "The id of the last item of the previous page")),
    responses((status = 200, description = "Orders by id", body = Vec<OrderView>),
        (status = 422, description = "A bad filter, limit or cursor", body = ErrorBody)))]
#[tracing::instrument(name = "orders::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<StatusFilter>,
    paging: Paging<OrderId>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let status = filter.parse::<OrderStatus>()?;
    Ok(Json(
        state
            .store
            .list_orders(status, paging.limit, paging.after)
            .await?,
    ))
}

/// One order. With `?wait=N` the answer waits up to N seconds for the order
/// to be decided (useful right after placing it). An order not in the read
/// model whose id this gateway may have issued lately is waited for (up to
/// APPLIED_WAIT, or N if longer), then answered 202 if still not there.
#[utoipa::path(get, path = "/api/orders/{id}", operation_id = "get_order", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"),
        ("wait" = Option<u64>, Query, description = "Seconds (up to 30) to wait for a decision")),
    responses((status = 200, description = "The order with its lines", body = OrderView),
        (status = 202, description = "Not processed yet; the id may still be in the log", body = OrderPending),
        (status = 404, description = "No such order", body = ErrorBody)))]
#[tracing::instrument(name = "orders::one", level = "debug", skip_all)]
pub async fn one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<OrderId>,
    ApiQuery(query): ApiQuery<OneOrderQuery>,
) -> Result<FoundOrQueued<OrderView, OrderPending>, ApiError> {
    let started = tokio::time::Instant::now();
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let queued = super::write_ids::recently_issued(id.as_uuid());
    let wait_for_missing = if queued {
        wait.max(super::products::APPLIED_WAIT)
    } else {
        wait
    };
    loop {
        // Watch before reading, so a decision committed in between wakes us.
        let watching = state.order_watch.watch(id);
        let changed = watching.changed(FALLBACK_CHECK);
        let order = state.store.get_order(id).await?;
        let waited = started.elapsed();
        let done = state.shutdown.is_cancelled()
            || match &order {
                Some(order) => order.status != OrderStatus::Pending || waited >= wait,
                None => waited >= wait_for_missing,
            };
        if done {
            return match order {
                Some(order) => Ok(FoundOrQueued::Found(order)),
                None if queued => Ok(FoundOrQueued::Queued(OrderPending {
                    order_id: id,
                    status: Queued::Queued,
                })),
                None => Err(ApiError::not_found(format!("order {id} not found"))),
            };
        }
        let limit = match order {
            Some(_) => wait,
            None => wait_for_missing,
        };
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(limit.saturating_sub(waited)) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

/// The price of each product among `ids` that exists: from the gateway's
/// price list, else the read model (one query for all the misses). A
/// product this gateway just created may not be applied yet: its id works
/// in the very next request, so it is waited for (bounded).
async fn priced(
    state: &AppState,
    ids: &[ProductId],
) -> Result<HashMap<ProductId, Priced>, ApiError> {
    let (mut catalog, missing) = state.prices.lookup(ids);
    if missing.is_empty() {
        return Ok(catalog);
    }
    let stored = state.store.get_products(&missing).await?;
    for product in stored.values() {
        catalog.insert(product.id, state.prices.remember(product));
    }
    for id in missing.iter().filter(|id| !stored.contains_key(id)) {
        if state.store.claimed_sku(*id).await?.is_some() {
            if let Some(product) =
                super::products::readable_product(state, *id, 0, super::products::APPLIED_WAIT)
                    .await?
            {
                catalog.insert(*id, state.prices.remember(&product));
            }
        }
    }
    Ok(catalog)
}

#[utoipa::path(post, path = "/api/orders/{id}/cancel", operation_id = "cancel_order", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "The command is in the log; a worker carries it out or records why not", body = CommandQueued),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order's state does not allow it", body = ErrorBody)))]
#[tracing::instrument(name = "orders::cancel", level = "debug", skip_all)]
pub async fn cancel(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<OrderId>,
) -> Result<Accepted<CommandQueued>, ApiError> {
    lifecycle_command(state, ids, id, OrderCommand::Cancel).await
}

#[utoipa::path(post, path = "/api/orders/{id}/ship", operation_id = "ship_order", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "The command is in the log; a worker carries it out or records why not", body = CommandQueued),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order's state does not allow it", body = ErrorBody)))]
#[tracing::instrument(name = "orders::ship", level = "debug", skip_all)]
pub async fn ship(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<OrderId>,
) -> Result<Accepted<CommandQueued>, ApiError> {
    lifecycle_command(state, ids, id, OrderCommand::Ship).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CommitQuery {
    /// Seconds (up to 30) to wait for the worker's decision.
    pub wait: Option<u64>,
}

/// What a commit answers: the order, confirmed (200), or the command in the
/// log (202) when the client did not wait for the decision.
pub enum CommitAnswer {
    Confirmed(OrderView),
    Queued(Accepted<CommandQueued>),
}

impl IntoResponse for CommitAnswer {
    fn into_response(self) -> Response {
        match self {
            CommitAnswer::Confirmed(order) => Json(order).into_response(),
            CommitAnswer::Queued(queued) => queued.into_response(),
        }
    }
}

/// Payment taken: a HELD order becomes CONFIRMED, if its hold has not run
/// out. The worker decides (`order.committed`), so a commit that races the
/// expiry is decided once, either way. With `?wait=N` the answer waits for
/// that decision: 200 with the confirmed order, or 409 when the hold
/// expired first — its stock was released; place the order again. A
/// repeated commit of a committed order answers 200.
#[utoipa::path(post, path = "/api/orders/{id}/commit", operation_id = "commit_order", tag = "orders",
    params(("id" = OrderId, Path, description = "The order's id"), CommitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 200, description = "Committed: the order is CONFIRMED (now, or by an earlier commit)", body = OrderView),
        (status = 202, description = "The commit is in the log; read the order for the decision", body = CommandQueued, headers(("Location" = String, description = "The order's URL"))),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Not committed: the hold expired (the stock was released; place the order again), the order was cancelled, or it was placed without a hold", body = ErrorBody)))]
#[tracing::instrument(name = "orders::commit", level = "debug", skip_all)]
pub async fn commit(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<OrderId>,
    ApiQuery(query): ApiQuery<CommitQuery>,
) -> Result<CommitAnswer, ApiError> {
    let queued = super::write_ids::recently_issued(id.as_uuid());
    // An order placed a moment ago may not be decided yet: its decision
    // is waited for (bounded), so a checkout can commit right after it.
    let read = || async { Ok(state.store.get_order(id).await?) };
    let order = super::long_poll::until_decided(&state, Some(5), queued, read, |o: &OrderView| {
        o.status != OrderStatus::Pending
    })
    .await?;
    if let Some(order) = &order {
        if order.hold_until.is_some()
            && matches!(
                order.status,
                OrderStatus::Confirmed | OrderStatus::PartiallyShipped | OrderStatus::Shipped
            )
        {
            return Ok(CommitAnswer::Confirmed(order.clone()));
        }
        if order.hold_until.is_none() && order.status != OrderStatus::Pending {
            return Err(ApiError::conflict(format!(
                "cannot commit order {id}: it was placed without a hold, so it needs no commit"
            )));
        }
    }
    let accepted = lifecycle_command(state.clone(), ids, id, OrderCommand::Commit).await?;
    if query.wait.unwrap_or(0) == 0 {
        return Ok(CommitAnswer::Queued(accepted));
    }
    let read = || async { Ok(state.store.get_order(id).await?) };
    let decided = super::long_poll::until_decided(&state, query.wait, true, read, |o| {
        !matches!(o.status, OrderStatus::Held | OrderStatus::Pending)
    })
    .await?;
    match decided {
        Some(order) if order.status == OrderStatus::Confirmed => Ok(CommitAnswer::Confirmed(order)),
        Some(order) if !matches!(order.status, OrderStatus::Held | OrderStatus::Pending) => {
            let why = OrderCommand::Commit
                .refusal(order.status)
                .unwrap_or("its state does not allow it");
            Err(ApiError::conflict(format!(
                "cannot commit order {id}: {why}"
            )))
        }
        _ => Ok(CommitAnswer::Queued(accepted)),
    }
}

/// Checks the command against the order's state in the read model (409 when
/// it cannot be allowed), then appends it for the worker, which decides for
/// good: two racing commands are both accepted here and the second one is
/// refused there, with its reason recorded (alert and audit trail).
async fn lifecycle_command(
    state: AppState,
    ids: WriteIds,
    id: OrderId,
    command: OrderCommand,
) -> Result<Accepted<CommandQueued>, ApiError> {
    let verb = command.verb();
    match state.store.get_order(id).await? {
        Some(order) => {
            if let Some(why) = command.refusal(order.status) {
                return Err(ApiError::conflict(format!(
                    "cannot {verb} order {id}: {why}"
                )));
            }
        }
        None if !super::write_ids::recently_issued(id.as_uuid()) => {
            return Err(ApiError::not_found(format!("order {id} not found")));
        }
        None => {}
    }
    let receipt = state
        .append(
            &command
                .request(id)
                .into_envelope_with_id(ids.id(verb), Utc::now())
                .sent_by(ids.actor()),
        )
        .await?;
    Ok(Accepted {
        body: CommandQueued {
            order_id: id,
            command,
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: Some(format!("/api/orders/{id}")),
    })
}
