//! The gateway's price list: what an order needs of each product (its
//! price, and its sku for error messages), kept in memory so that placing
//! an order needs no database round trip.
//!
//! A profile of `POST /api/orders` showed the price lookup, one PostgreSQL
//! query per order, taking 46% of the gateway's CPU (the commit that
//! added this cache has the figures). Products never change price or sku once created
//! (no event does so), so an entry read from the read model stays correct
//! for good: the list is filled on a miss and never needs invalidating. Only
//! products a worker has applied are put in it, never one this gateway has
//! just appended, so an order is priced only from a product the workers
//! know. If an event that changes a price is ever added, the worker's
//! notifications must evict the product here.
//!
//! The list is bounded (`--catalog-cache-products`); beyond it the least
//! recently used products fall out and are read again when ordered.

use crate::domain::{Money, ProductId};
use crate::store::queries::ProductView;
use std::collections::HashMap;
use std::sync::Arc;

/// What an order needs of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub price: Money,
    pub sku: Arc<str>,
}

impl From<&ProductView> for Priced {
    fn from(product: &ProductView) -> Priced {
        Priced {
            price: product.price,
            sku: Arc::from(product.sku.as_str()),
        }
    }
}

pub struct PriceList {
    products: quick_cache::sync::Cache<ProductId, Priced>,
}

impl PriceList {
    pub fn new(capacity: usize) -> PriceList {
        PriceList {
            products: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// The known products among `ids`, and the ids to read from the store.
    pub fn lookup(&self, ids: &[ProductId]) -> (HashMap<ProductId, Priced>, Vec<ProductId>) {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.products.get(id) {
                Some(priced) => {
                    found.insert(*id, priced);
                }
                None if !missing.contains(id) => missing.push(*id),
                None => {}
            }
        }
        (found, missing)
    }

    /// Remembers a product read from the read model (so applied).
    pub fn remember(&self, product: &ProductView) -> Priced {
        let priced = Priced::from(product);
        self.products.insert(product.id, priced.clone());
        priced
    }

    pub fn len(&self) -> usize {
        self.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str, cents: i64) -> ProductView {
        ProductView {
            id: ProductId::new(),
            sku: sku.into(),
            name: "n".into(),
            price: Money::from_cents(cents).unwrap(),
            category_name: "c".into(),
            low_stock_threshold: 0,
            reorder_quantity: 1,
            on_hand: 0,
            reserved: 0,
            available: 0,
            backorder_limit: 0,
            backordered: 0,
            created_at: chrono::Utc::now(),
            as_of: None,
            locations: None,
        }
    }

    #[test]
    fn misses_are_listed_once_and_hits_priced() {
        let list = PriceList::new(10);
        let known = product("A-1", 150);
        list.remember(&known);
        let unknown = ProductId::new();
        let (found, missing) = list.lookup(&[known.id, unknown, unknown, known.id]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&known.id].price, Money::from_cents(150).unwrap());
        assert_eq!(&*found[&known.id].sku, "A-1");
        assert_eq!(missing, vec![unknown]);
    }

    #[test]
    fn the_list_stays_within_its_capacity() {
        let list = PriceList::new(100);
        for i in 0..1_000 {
            list.remember(&product(&format!("S-{i}"), i));
        }
        assert!(list.len() <= 100, "{} entries", list.len());
        assert!(!list.is_empty());
    }
}
