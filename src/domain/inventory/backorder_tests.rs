//! Backorders: selling past zero under a product's limit, and filling the
//! waiting orders first in, first out as stock comes back.

use super::tests::{cancel, place, receive, refusal, ship, types, World};
use super::*;
use crate::domain::events::{OrderBackorderFilled, ProductPolicySet};

fn limit(product_id: ProductId, backorder_limit: i64) -> DomainEvent {
    DomainEvent::ProductPolicySet(ProductPolicySet {
        product_id,
        backorder_limit,
    })
}

/// (order, units of `product` filled) for each fill among `events`.
fn fills(events: &[DomainEvent]) -> Vec<(OrderId, i64)> {
    events
        .iter()
        .filter_map(|e| match e {
            DomainEvent::OrderBackorderFilled(OrderBackorderFilled {
                order_id,
                allocations,
                ..
            }) => Some((*order_id, allocations.iter().map(|a| a.quantity).sum())),
            _ => None,
        })
        .collect()
}

fn waiting(w: &World, order: OrderId) -> i64 {
    w.inventory.orders[&order]
        .lines
        .iter()
        .map(|l| l.backordered)
        .sum()
}

fn check(w: &World) {
    let violations = w.inventory.invariant_violations();
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn without_a_limit_an_order_short_of_stock_is_rejected_as_before() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 2);
    let (order, placed) = place(&[(p, 3)]);
    w.one(placed);
    assert_eq!(w.status(order), OrderStatus::Rejected);
    let reason = w.inventory.orders[&order].reason.clone().unwrap();
    assert!(reason.starts_with("insufficient stock for B"), "{reason}");
    check(&w);
}

#[test]
fn an_order_past_zero_waits_then_a_receipt_fills_it() {
    let mut w = World::new();
    let p = w.product("B", 0, 10, 5);
    w.one(limit(p, 5));
    let (order, placed) = place(&[(p, 8)]);
    let decided = w.one(placed);
    assert_eq!(w.status(order), OrderStatus::Backordered);
    assert!(
        matches!(&decided[0], DomainEvent::OrderConfirmed(c) if c.backordered.len() == 1 && c.backordered[0].quantity == 3)
    );
    assert_eq!(w.stock(p), (5, 5), "what was in stock is reserved");
    assert_eq!(w.inventory.products[&p].backordered, 3);
    assert_eq!(waiting(&w, order), 3);
    // The purchase order covers the reorder quantity and the waiting units.
    let po = decided.iter().find_map(|e| match e {
        DomainEvent::PurchaseOrderDrafted(po) => Some(po.quantity),
        _ => None,
    });
    assert_eq!(po, Some(13));
    // Not shippable while it waits; sold all the same.
    assert!(refusal(&w.one(ship(order))).contains("waits for stock"));
    assert_eq!(w.inventory.orders[&order].sold_cents(), 2000);

    assert_eq!(fills(&w.one(receive(p, 2))), [(order, 2)]);
    assert_eq!(
        (w.status(order), waiting(&w, order)),
        (OrderStatus::Backordered, 1)
    );
    assert_eq!(fills(&w.one(receive(p, 4))), [(order, 1)]);
    assert_eq!(w.status(order), OrderStatus::Confirmed);
    assert_eq!(w.stock(p), (11, 8));
    assert_eq!(w.inventory.products[&p].backordered, 0);
    assert_eq!(types(&w.one(ship(order))), ["order.shipped"]);
    check(&w);
}

#[test]
fn three_backorders_are_filled_in_placement_order_by_two_receipts() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 0);
    w.one(limit(p, 10));
    let orders: Vec<OrderId> = [2, 3, 1]
        .into_iter()
        .map(|quantity| {
            let (order, placed) = place(&[(p, quantity)]);
            w.one(placed);
            order
        })
        .collect();
    assert!(orders
        .iter()
        .all(|o| w.status(*o) == OrderStatus::Backordered));
    assert_eq!(w.inventory.products[&p].backordered, 6);
    assert_eq!(
        fills(&w.one(receive(p, 4))),
        [(orders[0], 2), (orders[1], 2)]
    );
    assert_eq!(w.status(orders[0]), OrderStatus::Confirmed);
    assert_eq!(waiting(&w, orders[1]), 1);
    assert_eq!(
        waiting(&w, orders[2]),
        1,
        "the last waits: the stock ran out first"
    );
    assert_eq!(
        fills(&w.one(receive(p, 3))),
        [(orders[1], 1), (orders[2], 1)]
    );
    assert!(orders
        .iter()
        .all(|o| w.status(*o) == OrderStatus::Confirmed));
    assert_eq!(w.stock(p), (7, 6));
    check(&w);
}

#[test]
fn beyond_the_limit_an_order_is_rejected_naming_it_and_a_new_order_queues_behind() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 1);
    w.one(limit(p, 3));
    let (first, placed) = place(&[(p, 3)]);
    w.one(placed);
    assert_eq!(waiting(&w, first), 2);
    let (second, placed) = place(&[(p, 2)]);
    w.one(placed);
    let reason = w.inventory.orders[&second].reason.clone().unwrap();
    assert!(
        reason.contains("1 more may wait for stock (backorder limit 3, 2 waiting)"),
        "{reason}"
    );
    let (third, placed) = place(&[(p, 1)]);
    w.one(placed);
    assert_eq!(waiting(&w, third), 1, "it queues behind");
    // Lowering the limit below what waits is refused (the gateway says so).
    assert!(w.inventory.clone().apply(&limit(p, 2), 0).is_err());
    assert_eq!(fills(&w.one(receive(p, 2))), [(first, 2)]);
    assert_eq!(w.status(third), OrderStatus::Backordered);
    check(&w);
}

#[test]
fn cancelling_a_backorder_releases_what_it_holds_and_leaves_the_queue() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 2);
    let q = w.product("Q", 0, 0, 5);
    w.one(limit(p, 10));
    let (first, placed) = place(&[(p, 4), (q, 1)]);
    w.one(placed);
    let (second, placed) = place(&[(p, 1)]);
    w.one(placed);
    assert_eq!((waiting(&w, first), waiting(&w, second)), (2, 1));
    assert_eq!(
        types(&w.one(cancel(first))),
        ["order.cancelled", "order.backorder_filled"]
    );
    // Its 2 reserved units of P came back, and went to the next in line.
    assert_eq!(w.status(second), OrderStatus::Confirmed);
    assert_eq!(w.stock(p), (2, 1));
    assert_eq!(w.stock(q), (5, 0));
    assert_eq!(w.inventory.products[&p].backordered, 0);
    assert!(fills(&w.one(receive(p, 3))).is_empty());
    check(&w);
}

#[test]
fn a_hold_never_waits_for_stock() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 1);
    w.one(limit(p, 10));
    let (order, mut placed) = place(&[(p, 2)]);
    if let DomainEvent::OrderPlaced(e) = &mut placed {
        e.hold_until = Some(super::tests::at(100));
    }
    w.one(placed);
    assert_eq!(w.status(order), OrderStatus::Rejected);
    check(&w);
}

#[test]
fn a_location_made_active_again_fills_the_queue() {
    let mut w = World::new();
    let p = w.product("B", 0, 0, 0);
    w.one(limit(p, 5));
    let east = LocationId::new();
    w.one(DomainEvent::LocationCreated(events::LocationCreated {
        location_id: east,
        code: "east".into(),
        name: "East".into(),
        priority: 1,
        active: false,
    }));
    w.one(super::tests::located(receive(p, 3), Some(east)));
    let (order, placed) = place(&[(p, 2)]);
    w.one(placed);
    assert_eq!(
        waiting(&w, order),
        2,
        "stock at an inactive location is not taken"
    );
    let reactivated = w.one(DomainEvent::LocationUpdated(events::LocationUpdated {
        location_id: east,
        name: None,
        priority: None,
        active: Some(true),
    }));
    // The batch that reactivates it has this product's queue loaded in a
    // worker only if it touches the product; here the whole state is.
    assert_eq!(fills(&reactivated), [(order, 2)]);
    assert_eq!(w.status(order), OrderStatus::Confirmed);
    check(&w);
}
