//! Stock in several locations: allocation by each strategy, split lines,
//! inactive locations, and shipments, cancels, returns and adjustments
//! acting where the stock is.

use super::tests::{
    adjust, cancel, count, located, place, receive, refusal, ship, ship_lines, take_back, World,
};
use super::*;
use crate::domain::events::{Allocation, LocationCreated, LocationUpdated};
use crate::domain::status::{AdjustmentReason, ReturnDisposition};
use crate::domain::Envelope;
use crate::domain::TransferId;

impl World {
    fn location(&mut self, code: &str, priority: i64) -> LocationId {
        let id = LocationId::new();
        self.one(DomainEvent::LocationCreated(LocationCreated {
            location_id: id,
            code: code.into(),
            name: code.to_uppercase(),
            priority,
            active: true,
        }));
        id
    }

    fn receive_at(&mut self, product: ProductId, location: LocationId, quantity: i64) {
        self.one(located(receive(product, quantity), Some(location)));
    }

    fn at(&self, product: ProductId, location: LocationId) -> (i64, i64) {
        let stock = self.inventory.stock_at(product, location);
        (stock.on_hand, stock.reserved)
    }

    fn allocations(&self, order: OrderId) -> Vec<(LocationId, i64)> {
        self.inventory.orders[&order]
            .allocations
            .iter()
            .map(|a| (a.location_id, a.quantity))
            .collect()
    }
}

fn confirmed_allocations(events: &[DomainEvent]) -> Vec<Allocation> {
    match events.first() {
        Some(DomainEvent::OrderConfirmed(c)) => c.allocations.clone().expect("recorded"),
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

/// The failure users report of multi-location systems (medusa#14987,
/// vendure#3588): enough stock in total, not at any one location.
#[test]
fn an_order_no_single_location_can_hold_is_confirmed_split() {
    for strategy in AllocationStrategy::ALL {
        let mut w = World::new();
        w.inventory.strategy = *strategy;
        let a = w.product("A", 0, 0, 0);
        let (east, west) = (w.location("east", 1), w.location("west", 2));
        w.receive_at(a, east, 3);
        w.receive_at(a, west, 4);
        let (order, placed) = place(&[(a, 6)]);
        let decided = w.one(placed);
        assert_eq!(w.status(order), OrderStatus::Confirmed, "{strategy:?}");
        let split = confirmed_allocations(&decided);
        assert_eq!(split.iter().map(|s| s.quantity).sum::<i64>(), 6);
        assert_eq!(split.len(), 2, "{strategy:?}: {split:?}");
        assert_eq!(w.at(a, east).1 + w.at(a, west).1, 6);
        assert_eq!(w.stock(a), (7, 6));
        assert!(w.inventory.invariant_violations().is_empty());
        assert_eq!(w.replayed(), w.inventory);
    }
}

#[test]
fn priority_fills_from_the_first_and_most_stock_from_the_fullest() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 0);
    let (east, west) = (w.location("east", 1), w.location("west", 2));
    w.receive_at(a, east, 3);
    w.receive_at(a, west, 10);
    let (order, placed) = place(&[(a, 5)]);
    w.one(placed);
    assert_eq!(w.allocations(order), vec![(east, 3), (west, 2)]);

    w.inventory.strategy = AllocationStrategy::MostStock;
    let (order, placed) = place(&[(a, 5)]);
    w.one(placed);
    assert_eq!(w.allocations(order), vec![(west, 5)]);
    assert_eq!((w.at(a, east), w.at(a, west)), ((3, 3), (10, 7)));
    // The allocations, decided under both strategies, are recorded: a
    // replay under either gives the same state.
    for strategy in AllocationStrategy::ALL {
        w.inventory.strategy = *strategy;
        assert_eq!(w.replayed(), w.inventory);
    }
}

#[test]
fn an_inactive_location_keeps_its_stock_but_allocates_none() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 2);
    let east = w.location("east", 1);
    w.receive_at(a, east, 5);
    w.one(DomainEvent::LocationUpdated(LocationUpdated {
        location_id: east,
        name: None,
        priority: None,
        active: Some(false),
    }));
    let (rejected, placed) = place(&[(a, 3)]);
    w.one(placed);
    assert_eq!(w.status(rejected), OrderStatus::Rejected);
    let reason = w.inventory.orders[&rejected].reason.clone().unwrap();
    assert!(reason.contains("available 2, short by 1"), "{reason}");
    assert_eq!(
        w.stock(a),
        (7, 0),
        "the inactive location's stock is still counted"
    );
    let (order, placed) = place(&[(a, 2)]);
    w.one(placed);
    assert_eq!(w.allocations(order), vec![(LocationId::DEFAULT, 2)]);
}

#[test]
fn a_recorded_allocation_from_an_inactive_location_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 0);
    let east = w.location("east", 1);
    w.receive_at(a, east, 5);
    w.one(DomainEvent::LocationUpdated(LocationUpdated {
        location_id: east,
        name: None,
        priority: None,
        active: Some(false),
    }));
    let (order, placed) = place(&[(a, 1)]);
    w.inventory.apply(&placed, 0).unwrap();
    let confirmed = DomainEvent::OrderConfirmed(events::OrderConfirmed {
        order_id: order,
        total: Money::from_cents(250).unwrap(),
        allocations: Some(vec![Allocation {
            product_id: a,
            location_id: east,
            quantity: 1,
        }]),
        hold_until: None,
        backordered: Vec::new(),
    });
    let refused = w.inventory.clone().apply(&confirmed, 0).unwrap_err();
    assert!(refused.0.contains("inactive"), "{refused}");
}

#[test]
fn shipments_and_cancels_act_where_the_units_are_allocated() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 0);
    let (east, west) = (w.location("east", 1), w.location("west", 2));
    w.receive_at(a, east, 2);
    w.receive_at(a, west, 5);
    let (order, placed) = place(&[(a, 4)]);
    w.one(placed);
    assert_eq!(w.allocations(order), vec![(east, 2), (west, 2)]);
    // Named: from west only.
    let shipped = w.one(located(ship_lines(order, &[(a, 1)]), Some(west)));
    let DomainEvent::OrderShipped(s) = &shipped[0] else {
        panic!("{shipped:?}")
    };
    assert_eq!(s.lines.as_ref().unwrap()[0].location_id, Some(west));
    assert_eq!((w.at(a, east), w.at(a, west)), ((2, 2), (4, 1)));
    // More than the order holds at a named location: refused.
    let too_many = w.one(located(ship_lines(order, &[(a, 2)]), Some(west)));
    assert!(
        refusal(&too_many).contains("where the order holds 1"),
        "{too_many:?}"
    );
    // Not named: the allocations in order (east first).
    w.one(ship_lines(order, &[(a, 2)]));
    assert_eq!((w.at(a, east), w.at(a, west)), ((0, 0), (4, 1)));
    // The cancel releases the one unit left, at west.
    w.one(cancel(order));
    assert_eq!((w.at(a, east), w.at(a, west)), ((0, 0), (4, 0)));
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn ship_everything_leaves_from_each_allocation() {
    let mut w = World::new();
    let (a, b) = (w.product("A", 0, 0, 0), w.product("B", 0, 0, 3));
    let east = w.location("east", -1);
    w.receive_at(a, east, 1);
    w.receive_at(a, LocationId::DEFAULT, 1);
    let (order, placed) = place(&[(a, 2), (b, 1)]);
    w.one(placed);
    let shipped = w.one(ship(order));
    let DomainEvent::OrderShipped(s) = &shipped[0] else {
        panic!("{shipped:?}")
    };
    let lines: Vec<(u32, Option<LocationId>, i64)> = s
        .lines
        .as_ref()
        .unwrap()
        .iter()
        .map(|l| (l.line_no, l.location_id, l.quantity))
        .collect();
    assert_eq!(
        lines,
        vec![
            (0, Some(east), 1),
            (0, Some(LocationId::DEFAULT), 1),
            (1, Some(LocationId::DEFAULT), 1)
        ]
    );
    assert_eq!(w.stock(a), (0, 0));
    assert_eq!(w.status(order), OrderStatus::Shipped);
    assert!(w.inventory.invariant_violations().is_empty());
}

#[test]
fn returns_adjustments_and_counts_act_at_their_location() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 4);
    let east = w.location("east", 1);
    w.receive_at(a, east, 3);
    // Default is first by priority (0 < 1): the order takes 2 there.
    let (order, placed) = place(&[(a, 2)]);
    w.one(placed);
    w.one(ship(order));
    w.one(located(
        take_back(order, &[(a, 1, ReturnDisposition::Restock)]),
        Some(east),
    ));
    assert_eq!(
        (w.at(a, LocationId::DEFAULT), w.at(a, east)),
        ((2, 0), (4, 0))
    );
    // An adjustment below what is reserved at that location is refused,
    // naming the orders that hold it there.
    let (held, placed) = place(&[(a, 2)]);
    w.one(placed);
    let refused = w.one(located(adjust(a, -1, None), Some(LocationId::DEFAULT)));
    let DomainEvent::StockAdjustmentRefused(r) = &refused[0] else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (r.on_hand, r.reserved, r.held_by.clone()),
        (2, 2, vec![held])
    );
    assert_eq!(r.location_id, Some(LocationId::DEFAULT));
    // The same at east is applied.
    w.one(located(adjust(a, -1, None), Some(east)));
    assert_eq!(w.at(a, east), (3, 0));
    // A count at east: its delta is against east's book.
    let counted = w.one(located(count(a, 5, 100), Some(east)));
    let DomainEvent::StockAdjusted(c) = &counted[0] else {
        panic!("{counted:?}")
    };
    assert_eq!((c.delta, c.location_id), (2, Some(east)));
    assert_eq!(w.at(a, east), (5, 0));
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn an_order_confirmed_before_locations_holds_everything_at_the_default() {
    // An order.confirmed of v1 (no allocations), as archived by earlier
    // releases: its lines, a product's together, at the default location.
    let mut w = World::new();
    let a = w.product("A", 0, 0, 5);
    let (order, placed) = place(&[(a, 1), (a, 2)]);
    w.inventory.apply(&placed, 0).unwrap();
    let v1 = Envelope {
        version: 1,
        payload: serde_json::json!({"order_id": order, "total": 7.5}),
        ..DomainEvent::OrderConfirmed(events::OrderConfirmed {
            order_id: order,
            total: Money::from_cents(750).unwrap(),
            allocations: None,
            hold_until: None,
            backordered: Vec::new(),
        })
        .into_envelope(chrono::Utc::now())
    };
    let event = DomainEvent::from_envelope(&v1).unwrap();
    w.inventory.apply_enveloped(&v1, &event).unwrap();
    assert_eq!(w.allocations(order), vec![(LocationId::DEFAULT, 3)]);
    assert_eq!(w.at(a, LocationId::DEFAULT), (5, 3));
    // One ledger row per line, as the release that wrote it recorded.
    let reserved_rows = w
        .inventory
        .journal
        .iter()
        .filter(|m| m.kind == MovementKind::Reserved)
        .count();
    assert_eq!(reserved_rows, 2);
    assert!(w.inventory.invariant_violations().is_empty());
}

fn transfer(
    from: LocationId,
    to: LocationId,
    lines: &[(ProductId, i64)],
) -> (TransferId, DomainEvent) {
    let id = TransferId::new();
    let event = DomainEvent::TransferRequested(events::TransferRequested {
        transfer_id: id,
        from,
        to,
        lines: lines
            .iter()
            .map(|&(product_id, quantity)| events::ProductQuantity {
                product_id,
                quantity,
                location_id: None,
            })
            .collect(),
    });
    (id, event)
}

fn receive_transfer(id: TransferId, lines: &[(ProductId, i64)]) -> DomainEvent {
    DomainEvent::TransferReceiveRequested(events::TransferReceiveRequested {
        transfer_id: id,
        lines: lines
            .iter()
            .map(|&(product_id, received)| events::ReceivedLine {
                product_id,
                received,
            })
            .collect(),
        discrepancy_reason: Some("a box broke".into()),
    })
}

#[test]
fn a_transfer_ships_then_arrives_and_a_shortfall_is_a_transit_loss() {
    let mut w = World::new();
    let (a, b) = (w.product("A", 0, 0, 0), w.product("B", 0, 0, 0));
    let east = w.location("east", 1);
    w.receive_at(a, LocationId::DEFAULT, 5);
    w.receive_at(b, LocationId::DEFAULT, 2);
    let (id, requested) = transfer(LocationId::DEFAULT, east, &[(a, 4), (b, 2)]);
    let shipped = w.one(requested);
    assert!(
        matches!(shipped[..], [DomainEvent::TransferShipped(_)]),
        "{shipped:?}"
    );
    assert_eq!(w.at(a, LocationId::DEFAULT), (1, 0));
    assert_eq!(w.inventory.stock_at(a, east).in_transit, 4);
    assert_eq!(w.inventory.products[&a].in_transit, 4);
    assert!(w.inventory.invariant_violations().is_empty());
    // In transit: not available anywhere.
    let (order, placed) = place(&[(a, 2)]);
    w.one(placed);
    assert_eq!(w.status(order), OrderStatus::Rejected);

    // Three of A arrive; B whole (left out of the lines).
    let received = w.one(receive_transfer(id, &[(a, 3)]));
    let DomainEvent::StockAdjusted(loss) = &received[1] else {
        panic!("{received:?}")
    };
    assert_eq!(
        (loss.delta, loss.reason, loss.location_id),
        (-1, AdjustmentReason::TransitLoss, Some(east))
    );
    assert_eq!((w.at(a, east), w.at(b, east)), ((3, 0), (2, 0)));
    assert_eq!(w.inventory.products[&a].in_transit, 0);
    assert_eq!(
        w.inventory.transfers[&id].status,
        crate::domain::status::TransferStatus::Received
    );
    // Received twice: refused with an alert, nothing moves.
    let again = w.one(receive_transfer(id, &[]));
    assert!(refusal(&again).contains("is received"), "{again:?}");
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_transfer_beyond_what_is_available_at_its_origin_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 3);
    let east = w.location("east", 1);
    let (order, placed) = place(&[(a, 2)]);
    w.one(placed);
    assert_eq!(w.status(order), OrderStatus::Confirmed);
    let (id, requested) = transfer(LocationId::DEFAULT, east, &[(a, 2)]);
    let refused = w.one(requested);
    assert!(
        refusal(&refused).contains("default has 1 available"),
        "{refused:?}"
    );
    assert_eq!(
        w.inventory.transfers[&id].status,
        crate::domain::status::TransferStatus::Refused
    );
    assert_eq!(w.at(a, LocationId::DEFAULT), (3, 2));
    // Receiving a refused transfer: refused.
    let received = w.one(receive_transfer(id, &[]));
    assert!(refusal(&received).contains("is refused"), "{received:?}");
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_purchase_order_is_received_at_the_first_active_location_or_where_its_receipt_says() {
    let mut w = World::new();
    // Threshold 3, reorder 10: an order of 4 of the 5 drafts a purchase order.
    let a = w.product("A", 3, 10, 5);
    let east = w.location("east", -5);
    let west = w.location("west", 7);
    let (_, placed) = place(&[(a, 4)]);
    let decided = w.one(placed);
    let drafted = decided
        .iter()
        .find_map(|e| match e {
            DomainEvent::PurchaseOrderDrafted(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a purchase order");
    assert_eq!(
        drafted.location_id,
        Some(east),
        "east's priority -5 comes first"
    );
    let received = w.one(DomainEvent::PurchaseOrderReceived(
        events::PurchaseOrderReceived {
            purchase_order_id: drafted.purchase_order_id,
            product_id: a,
            location_id: None,
        },
    ));
    let DomainEvent::StockReceived(r) = &received[0] else {
        panic!("{received:?}")
    };
    assert_eq!(r.location_id, Some(east));
    assert_eq!(w.at(a, east), (10, 0));
    // The next one is delivered elsewhere, as its receipt says.
    let (_, placed) = place(&[(a, 10)]);
    let decided = w.one(placed);
    let po = decided
        .iter()
        .find_map(|e| match e {
            DomainEvent::PurchaseOrderDrafted(d) => Some(d.purchase_order_id),
            _ => None,
        })
        .expect("a second purchase order");
    w.one(DomainEvent::PurchaseOrderReceived(
        events::PurchaseOrderReceived {
            purchase_order_id: po,
            product_id: a,
            location_id: Some(west),
        },
    ));
    assert_eq!(w.at(a, west), (10, 0));
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}
