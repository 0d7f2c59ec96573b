//! The order decision: reserve every item or none. Pure: it looks at a
//! snapshot of stock that the caller has locked, and says what to do.

use super::events::{OrderConfirmed, OrderPlaced, OrderRejected};
use super::ProductId;
use std::collections::BTreeMap;

/// Stock of one product as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Reserve these quantities (per product, summed over the order's lines).
    Confirm {
        reservations: BTreeMap<ProductId, i64>,
        event: OrderConfirmed,
    },
    Reject(OrderRejected),
}

/// The quantity each product is asked for, summed over the order's lines, so
/// an order listing one product twice cannot reserve more than exists.
/// A BTreeMap keeps product ids sorted: callers lock rows in this order,
/// which keeps concurrent workers from deadlocking on each other.
pub fn requested_quantities(order: &OrderPlaced) -> BTreeMap<ProductId, i64> {
    let mut wanted = BTreeMap::new();
    for line in &order.items {
        *wanted.entry(line.product_id).or_insert(0) += line.quantity;
    }
    wanted
}

/// All or nothing: confirm only if every product has enough available stock.
/// The rejection reason names the first product that falls short and by how
/// much, or the product that does not exist.
pub fn reserve_all_or_nothing(
    order: &OrderPlaced,
    stock: &BTreeMap<ProductId, StockLevel>,
) -> Decision {
    let wanted = requested_quantities(order);
    for (product_id, &quantity) in &wanted {
        let reason = match stock.get(product_id) {
            None => Some(format!("unknown product {product_id}")),
            Some(level) if level.available() < quantity => Some(format!(
                "insufficient stock for {} ({}): requested {}, available {}, short by {}",
                level.sku,
                product_id,
                quantity,
                level.available(),
                quantity - level.available()
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Decision::Reject(OrderRejected {
                order_id: order.order_id,
                reason,
            });
        }
    }
    Decision::Confirm {
        reservations: wanted,
        event: OrderConfirmed {
            order_id: order.order_id,
            total: order.total,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::OrderLine;
    use crate::domain::money::Money;

    fn order(lines: &[(ProductId, i64)]) -> OrderPlaced {
        OrderPlaced {
            order_id: crate::domain::OrderId::new(),
            customer_email: "c@example.com".into(),
            items: lines
                .iter()
                .map(|&(product_id, quantity)| OrderLine {
                    product_id,
                    quantity,
                    unit_price: Money::from_cents(100).unwrap(),
                })
                .collect(),
            total: Money::from_cents(100 * lines.iter().map(|l| l.1).sum::<i64>()).unwrap(),
        }
    }

    fn level(sku: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            sku: sku.into(),
            on_hand,
            reserved,
        }
    }

    #[test]
    fn confirms_when_every_item_is_available() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let stock = BTreeMap::from([(a, level("A", 5, 2)), (b, level("B", 1, 0))]);
        match reserve_all_or_nothing(&order(&[(a, 3), (b, 1)]), &stock) {
            Decision::Confirm {
                reservations,
                event,
            } => {
                assert_eq!(reservations, BTreeMap::from([(a, 3), (b, 1)]));
                assert_eq!(event.total.cents(), 400);
            }
            other => panic!("expected confirm, got {other:?}"),
        }
    }

    #[test]
    fn rejects_whole_order_when_one_item_is_short() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let stock = BTreeMap::from([(a, level("A", 5, 0)), (b, level("B-7", 3, 2))]);
        match reserve_all_or_nothing(&order(&[(a, 1), (b, 2)]), &stock) {
            Decision::Reject(r) => {
                assert!(r.reason.contains("B-7"), "{}", r.reason);
                assert!(r.reason.contains("short by 1"), "{}", r.reason);
            }
            other => panic!("expected reject, got {other:?}"),
        }
    }

    #[test]
    fn sums_repeated_lines_of_one_product() {
        let a = ProductId::new();
        let stock = BTreeMap::from([(a, level("A", 3, 0))]);
        assert!(matches!(
            reserve_all_or_nothing(&order(&[(a, 2), (a, 2)]), &stock),
            Decision::Reject(_)
        ));
        assert!(matches!(
            reserve_all_or_nothing(&order(&[(a, 2), (a, 1)]), &stock),
            Decision::Confirm { .. }
        ));
    }

    #[test]
    fn rejects_unknown_product() {
        let a = ProductId::new();
        match reserve_all_or_nothing(&order(&[(a, 1)]), &BTreeMap::new()) {
            Decision::Reject(r) => assert!(r.reason.contains("unknown product")),
            other => panic!("expected reject, got {other:?}"),
        }
    }
}
