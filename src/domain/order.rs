//! What an order asks of each product. The decision (reserve every item
//! or none, and where) is `Inventory::allocate`.

use super::events::OrderPlaced;
use super::ProductId;
use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::OrderLine;
    use crate::domain::money::Money;

    #[test]
    fn sums_repeated_lines_of_one_product() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let line = |product_id, quantity| OrderLine {
            product_id,
            quantity,
            unit_price: Money::from_cents(100).unwrap(),
        };
        let order = OrderPlaced {
            order_id: crate::domain::OrderId::new(),
            customer_email: "c@example.com".into(),
            items: vec![line(a, 2), line(b, 1), line(a, 3)],
            total: Money::from_cents(600).unwrap(),
            hold_until: None,
        };
        assert_eq!(
            requested_quantities(&order),
            BTreeMap::from([(a, 5), (b, 1)])
        );
    }
}
