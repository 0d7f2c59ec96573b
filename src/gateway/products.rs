//! Catalog and stock routes.

use super::csv_download::{download, CsvShape, PageReader};
use super::error::ApiError;
use super::responses::ErrorBody;
use super::responses::{
    Accepted, FoundOrQueued, ProductPending, ProductQueued, Queued, StockQueued, Stored,
};
use super::write_ids::WriteIds;
use super::{ApiJson, ApiPath, ApiQuery, AppState, Paging};
use crate::domain::catalog::{parse_name, parse_stock_level, Quantity, Sku};
use crate::domain::events::{ProductCreated, StockReceived};
use crate::domain::{DomainEvent, LocationId, Money, ProductId};
use crate::store::product_search::{ProductSearch, ProductSort};
use crate::store::queries::ProductView;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    pub price: Money,
    #[serde(default)]
    pub category_name: Option<String>,
    #[serde(default)]
    pub low_stock_threshold: Option<i64>,
    #[serde(default)]
    pub reorder_quantity: Option<i64>,
    /// Stock to receive right away (a `stock.received` after the creation).
    #[serde(default, alias = "stock", alias = "quantity")]
    pub initial_stock: Option<i64>,
    /// Accepted for compatibility with the reference's clients; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    pub quantity: i64,
    /// Where the stock is (see `/api/locations`); default: the default
    /// location.
    #[serde(default)]
    pub location_id: Option<LocationId>,
}

/// `GET /api/products`'s filters and order (paging comes beside them).
#[derive(Debug, Deserialize)]
pub struct ProductListQuery {
    pub q: Option<String>,
    pub category: Option<String>,
    pub low_stock: Option<bool>,
    pub sort: Option<String>,
    pub order: Option<String>,
}

/// The longest search text.
const MAX_SEARCH_CHARS: usize = 200;

impl ProductListQuery {
    fn parse(&self) -> Result<ProductSearch, ApiError> {
        let text = match self.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.chars().count() > MAX_SEARCH_CHARS => {
                return Err(ApiError::invalid(
                    "q",
                    format!("must be at most {MAX_SEARCH_CHARS} characters"),
                ))
            }
            Some(q) => Some(q.to_string()),
        };
        let sort = match self.sort.as_deref() {
            None | Some("") => ProductSort::Id,
            Some(name) => ProductSort::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "sort",
                    format!("must be one of {}", ProductSort::NAMES.join(", ")),
                )
            })?,
        };
        let descending = match self.order.as_deref() {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(ApiError::invalid("order", "must be asc or desc")),
        };
        Ok(ProductSearch {
            text,
            category: self.category.clone().filter(|c| !c.is_empty()),
            low_stock: self.low_stock.unwrap_or(false),
            sort,
            descending,
        })
    }
}

/// Products, a page at a time: by id (creation order), or searched,
/// filtered and sorted.
#[utoipa::path(get, path = "/api/products", operation_id = "list_products", tag = "products",
    params(("q" = Option<String>, Query, description = "Text the SKU or the name contains (case-insensitive, up to 200 characters)"),
        ("category" = Option<String>, Query, description = "Only this category"),
        ("low_stock" = Option<bool>, Query, description = "true: only products whose available stock is below their threshold"),
        ("sort" = Option<String>, Query, description = "sku, name, available or on_hand (default: id, the creation order)"),
        ("order" = Option<String>, Query, description = "asc (default) or desc"),
        ("limit" = Option<i64>, Query, description = "Items per page, 1 to 1000 (default 100)"),
        ("after" = Option<uuid::Uuid>, Query, description = "The id of the last item of the previous page (in the same sort)")),
    responses((status = 200, description = "Products in the order asked for", body = Vec<ProductView>),
        (status = 422, description = "A bad limit, cursor, sort, order or search text", body = ErrorBody)))]
#[tracing::instrument(name = "products::list", level = "debug", skip_all)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ProductListQuery>,
    paging: Paging<ProductId>,
) -> Result<Json<Vec<ProductView>>, ApiError> {
    let search = query.parse()?;
    Ok(Json(
        state
            .store
            .search_products(&search, paging.limit, paging.after)
            .await?,
    ))
}

/// Whether `id` names a product: applied, or created by this deployment
/// and still in the log (keyed like it, so applied after it).
pub(super) async fn product_exists(state: &AppState, id: ProductId) -> Result<bool, ApiError> {
    Ok(
        state.store.get_product(id).await?.is_some()
            || state.store.claimed_sku(id).await?.is_some(),
    )
}

/// 404 unless `id` names a product (see `product_exists`).
pub(super) async fn require_product(state: &AppState, id: ProductId) -> Result<(), ApiError> {
    if product_exists(state, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("product {id} not found")))
    }
}

/// The products export's columns.
const EXPORT_HEADER: [&str; 10] = [
    "id",
    "sku",
    "name",
    "category",
    "price",
    "low_stock_threshold",
    "reorder_quantity",
    "on_hand",
    "reserved",
    "available",
];

/// Every product with its figures, as CSV in creation order, streamed a
/// page at a time (its memory does not grow with the catalog).
#[utoipa::path(get, path = "/api/products/export.csv", operation_id = "export_products", tag = "products",
    responses((status = 200, description = "Every product, in creation order: id, sku, name, category, price, low_stock_threshold, reorder_quantity, on_hand, reserved, available",
        content((String = "text/csv")))))]
#[tracing::instrument(name = "products::export", level = "debug", skip_all)]
pub async fn export(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let read: PageReader<ProductView, ProductId> = Box::new(move |after, limit| {
        let store = store.clone();
        Box::pin(async move {
            store
                .search_products(&ProductSearch::default(), limit, after)
                .await
                .map_err(|e| e.to_string())
        })
    });
    let shape = CsvShape {
        header: &EXPORT_HEADER,
        record: |p: &ProductView| {
            vec![
                p.id.to_string(),
                p.sku.clone(),
                p.name.clone(),
                p.category_name.clone(),
                p.price.to_string(),
                p.low_stock_threshold.to_string(),
                p.reorder_quantity.to_string(),
                p.on_hand.to_string(),
                p.reserved.to_string(),
                p.available.to_string(),
            ]
        },
        cursor: |p: &ProductView| p.id,
    };
    download("products.csv", shape, read, None, None)
}

pub(super) use super::long_poll::APPLIED_WAIT;

/// The product, once a worker has applied it with at least `on_hand` units;
/// None if that takes longer than `wait`.
pub(super) async fn readable_product(
    state: &AppState,
    id: ProductId,
    on_hand: i64,
    wait: Duration,
) -> Result<Option<ProductView>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(product) = state.store.get_product(id).await? {
            if product.on_hand >= on_hand {
                return Ok(Some(product));
            }
        }
        if tokio::time::Instant::now() >= deadline || state.shutdown.is_cancelled() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Deserialize)]
pub struct OneProductQuery {
    /// RFC 3339: the figures as of this moment.
    pub as_of: Option<String>,
}

/// One product. With `?as_of=<RFC 3339>` its on-hand, reserved and
/// available are those of that moment (event time), from the stock ledger.
#[utoipa::path(get, path = "/api/products/{id}", operation_id = "get_product", tag = "products",
    params(("id" = ProductId, Path, description = "The product's id"),
        ("as_of" = Option<String>, Query, description = "RFC 3339: the figures as of this moment")),
    responses((status = 200, description = "The product", body = ProductView),
        (status = 202, description = "Created by this deployment, not yet applied by a worker", body = ProductPending),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A bad as_of", body = ErrorBody)))]
#[tracing::instrument(name = "products::one", level = "debug", skip_all)]
pub async fn one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProductId>,
    ApiQuery(query): ApiQuery<OneProductQuery>,
) -> Result<FoundOrQueued<ProductView, ProductPending>, ApiError> {
    let as_of = super::extract::parse_time("as_of", query.as_of.as_deref())?;
    if let Some(mut product) = state.store.get_product(id).await? {
        if let Some(at) = as_of {
            let (on_hand, reserved) = state.store.figures_as_of(id, at).await?.unwrap_or((0, 0));
            product.on_hand = on_hand;
            product.reserved = reserved;
            product.available = on_hand - reserved;
            product.as_of = chrono::DateTime::from_timestamp_millis(at);
        } else {
            product.locations = Some(state.store.stock_by_location(id).await?);
        }
        return Ok(FoundOrQueued::Found(product));
    }
    let Some(sku) = state.store.claimed_sku(id).await? else {
        return Err(ApiError::not_found(format!("product {id} not found")));
    };
    Ok(match readable_product(&state, id, 0, APPLIED_WAIT).await? {
        Some(product) => FoundOrQueued::Found(product),
        None => FoundOrQueued::Queued(ProductPending {
            id,
            sku,
            status: Queued::Queued,
        }),
    })
}

/// A new product's fields, each checked (the first bad one is the error,
/// naming its field), with the defaults filled in.
struct ValidProduct {
    sku: Sku,
    name: String,
    category_name: String,
    low_stock_threshold: i64,
    reorder_quantity: i64,
    initial_stock: Option<Quantity>,
}

impl ValidProduct {
    fn parse(body: &CreateProduct) -> Result<ValidProduct, ApiError> {
        let sku = Sku::parse(&body.sku).map_err(|e| ApiError::invalid("sku", e))?;
        let name = parse_name(&body.name).map_err(|e| ApiError::invalid("name", e))?;
        let category_name = match body.category_name.as_deref() {
            None | Some("") => "General".to_string(),
            Some(raw) => parse_name(raw).map_err(|e| ApiError::invalid("category_name", e))?,
        };
        let low_stock_threshold = parse_stock_level(body.low_stock_threshold.unwrap_or(10))
            .map_err(|e| ApiError::invalid("low_stock_threshold", e))?;
        let reorder_quantity = parse_stock_level(body.reorder_quantity.unwrap_or(50))
            .map_err(|e| ApiError::invalid("reorder_quantity", e))?;
        let initial_stock = match body.initial_stock {
            None | Some(0) => None,
            Some(q) => Some(Quantity::parse(q).map_err(|e| ApiError::invalid("initial_stock", e))?),
        };
        Ok(ValidProduct {
            sku,
            name,
            category_name,
            low_stock_threshold,
            reorder_quantity,
            initial_stock,
        })
    }
}

/// Creates a product: claims the sku (409 if taken), appends
/// `product.created` (and `stock.received` for initial stock), and answers
/// 201 once a worker has applied them, so the id works in the very next
/// request; 202 with the same body if that takes longer than APPLIED_WAIT.
#[utoipa::path(post, path = "/api/products", operation_id = "create_product", tag = "products",
    request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 201, description = "Created and readable", body = ProductQueued, headers(("Location" = String, description = "The product's URL"))),
        (status = 202, description = "Created; a worker has yet to apply it", body = ProductQueued, headers(("Location" = String, description = "The product's URL"))),
        (status = 409, description = "The sku is taken", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody)))]
#[tracing::instrument(name = "products::create", level = "debug", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<Stored<ProductQueued>, ApiError> {
    let valid = ValidProduct::parse(&body)?;
    let (sku, initial_stock) = (valid.sku, valid.initial_stock);
    let product_id = ProductId(ids.id("product"));
    if !state.store.claim_sku(sku.as_str(), product_id).await? {
        return Err(ApiError::conflict(format!(
            "a product with sku {} already exists",
            sku.as_str()
        )));
    }
    let now = Utc::now();
    let created = ProductCreated {
        product_id,
        sku: sku.as_str().to_string(),
        name: valid.name,
        price: body.price,
        category_name: valid.category_name,
        low_stock_threshold: valid.low_stock_threshold,
        reorder_quantity: valid.reorder_quantity,
    };
    let creation = DomainEvent::ProductCreated(created.clone())
        .into_envelope_with_id(ids.id("product.created"), now)
        .sent_by(ids.actor());
    let receipt = match state.append(&creation).await {
        Ok(receipt) => receipt,
        // It may be in the log: the sku stays this product's, for the
        // retry (the same ids) to finish.
        Err(e) if e.in_doubt() => return Err(e),
        Err(e) => {
            // Nothing was recorded: free the sku so a retry can succeed.
            if let Err(release) = state.store.release_sku(sku.as_str(), product_id).await {
                tracing::error!(error = %release, sku = sku.as_str(), "could not release a sku claim");
            }
            return Err(e);
        }
    };
    if let Some(quantity) = initial_stock {
        // Same key, same partition, after the creation: applied in order.
        let stock = DomainEvent::StockReceived(StockReceived {
            location_id: None,
            product_id,
            quantity: quantity.get(),
            purchase_order_id: None,
        })
        .into_envelope_with_id(ids.id("product.initial_stock"), now)
        .sent_by(ids.actor());
        if let Err(e) = state.append(&stock).await {
            // The product is recorded, its stock maybe not: in doubt as a
            // whole, so a retry with the key appends both again (the
            // worker keeps one of each).
            return Err(ApiError::from(crate::stream::LogError::OutcomeUnknown(
                format!(
                    "the product is recorded, its initial stock may not be: {}",
                    e.message
                ),
            )));
        }
    }
    let incoming = initial_stock.map_or(0, Quantity::get);
    let applied = readable_product(&state, product_id, incoming, APPLIED_WAIT).await?;
    let body = ProductQueued {
        id: product_id,
        sku: created.sku,
        name: created.name,
        price: created.price,
        category_name: created.category_name,
        low_stock_threshold: created.low_stock_threshold,
        reorder_quantity: created.reorder_quantity,
        on_hand: applied.as_ref().map_or(0, |p| p.on_hand),
        reserved: applied.as_ref().map_or(0, |p| p.reserved),
        available: applied.as_ref().map_or(0, |p| p.available),
        incoming_stock: if applied.is_some() { 0 } else { incoming },
        status: Queued::Queued,
        msg_id: receipt.msg_id(),
    };
    Ok(Stored {
        body,
        location: format!("/api/products/{product_id}"),
        readable: applied.is_some(),
    })
}

/// Receives stock for an existing product: appends `stock.received`, 202.
#[utoipa::path(post, path = "/api/products/{id}/stock", operation_id = "receive_stock", tag = "products",
    request_body = ReceiveStock,
    params(("id" = ProductId, Path, description = "The product's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer to a retry")),
    responses((status = 202, description = "The receipt is in the log", body = StockQueued),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 422, description = "A field is invalid (a quantity outside 1 to 1,000,000, an unknown location_id)", body = ErrorBody)))]
#[tracing::instrument(name = "products::receive_stock", level = "debug", skip_all)]
pub async fn receive_stock(
    State(state): State<AppState>,
    ids: WriteIds,
    ApiPath(id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<ReceiveStock>,
) -> Result<Accepted<StockQueued>, ApiError> {
    let quantity = Quantity::parse(body.quantity).map_err(|e| ApiError::invalid("quantity", e))?;
    super::locations::require_location(&state, "location_id", body.location_id).await?;
    // A product this gateway created is accepted before a worker applies
    // it: the receipt is keyed like the creation, so it is applied after it.
    require_product(&state, id).await?;
    let receipt = state
        .append(
            &DomainEvent::StockReceived(StockReceived {
                location_id: body.location_id,
                product_id: id,
                quantity: quantity.get(),
                purchase_order_id: None,
            })
            .into_envelope_with_id(ids.id("stock.received"), Utc::now())
            .sent_by(ids.actor()),
        )
        .await?;
    Ok(Accepted {
        body: StockQueued {
            product_id: id,
            quantity: quantity.get(),
            status: Queued::Queued,
            msg_id: receipt.msg_id(),
        },
        location: None,
    })
}
