//! Catalog and stock routes.

use super::error::ApiError;
use super::responses::{Accepted, Created, ProductQueued, Queued, StockQueued};
use super::{ApiJson, ApiPath, AppState, Paging};
use crate::domain::catalog::{parse_name, parse_stock_level, Quantity, Sku};
use crate::domain::events::{ProductCreated, StockReceived};
use crate::domain::{DomainEvent, Money, ProductId};
use crate::store::queries::ProductView;
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
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
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    pub quantity: i64,
}

pub async fn list(
    State(state): State<AppState>,
    paging: Paging<ProductId>,
) -> Result<Json<Vec<ProductView>>, ApiError> {
    Ok(Json(
        state
            .store
            .list_products(paging.limit, paging.after)
            .await?,
    ))
}

pub async fn one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    match state.store.get_product(id).await? {
        Some(product) => Ok(Json(product)),
        None => Err(ApiError::not_found(format!("product {id} not found"))),
    }
}

/// Creates a product: claims the sku (409 if taken), appends
/// `product.created` (and `stock.received` for initial stock), answers 201.
/// The read model shows the product once a worker has applied the event.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<Created<ProductQueued>, ApiError> {
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
    let _ = body.description;

    let product_id = ProductId::new();
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
        name,
        price: body.price,
        category_name,
        low_stock_threshold,
        reorder_quantity,
    };
    let receipt = match state
        .append(&DomainEvent::ProductCreated(created.clone()).into_envelope(now))
        .await
    {
        Ok(receipt) => receipt,
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
        state
            .append(
                &DomainEvent::StockReceived(StockReceived {
                    product_id,
                    quantity: quantity.get(),
                    purchase_order_id: None,
                })
                .into_envelope(now),
            )
            .await?;
    }
    let body = ProductQueued {
        id: product_id,
        sku: created.sku,
        name: created.name,
        price: created.price,
        category_name: created.category_name,
        low_stock_threshold: created.low_stock_threshold,
        reorder_quantity: created.reorder_quantity,
        on_hand: 0,
        reserved: 0,
        available: 0,
        incoming_stock: initial_stock.map_or(0, Quantity::get),
        status: Queued::Queued,
        msg_id: receipt.msg_id(),
    };
    Ok(Created {
        body,
        location: format!("/api/products/{product_id}"),
    })
}

/// Receives stock for an existing product: appends `stock.received`, 202.
pub async fn receive_stock(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<ReceiveStock>,
) -> Result<Accepted<StockQueued>, ApiError> {
    let quantity = Quantity::parse(body.quantity).map_err(|e| ApiError::invalid("quantity", e))?;
    if state.store.get_product(id).await?.is_none() {
        return Err(ApiError::not_found(format!("product {id} not found")));
    }
    let receipt = state
        .append(
            &DomainEvent::StockReceived(StockReceived {
                product_id: id,
                quantity: quantity.get(),
                purchase_order_id: None,
            })
            .into_envelope(Utc::now()),
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
