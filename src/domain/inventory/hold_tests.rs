//! Holds: confirmed as HELD, committed in time or expired by a request the
//! clock sent; every way a request can meet the order's state.

use super::tests::{at, cancel, place, refusal, ship, types, World};
use super::*;
use crate::domain::events::{OrderCommitRequested, OrderExpireRequested};

/// An order of `quantity` of `product` held for `ttl` seconds from its
/// placement (the next command).
fn place_held(w: &World, product: ProductId, quantity: i64, ttl: i64) -> (OrderId, DomainEvent) {
    let (id, mut placed) = place(&[(product, quantity)]);
    if let DomainEvent::OrderPlaced(e) = &mut placed {
        e.hold_until = Some(at(w.clock + 1 + ttl));
    }
    (id, placed)
}

fn commit(order_id: OrderId) -> DomainEvent {
    DomainEvent::OrderCommitRequested(OrderCommitRequested { order_id })
}

/// The sweep's request, for the hold `w`'s order has (sent at the next
/// command's time).
fn expire(w: &World, order_id: OrderId, epoch: u64) -> DomainEvent {
    let until = w.inventory.orders[&order_id].hold_until.expect("a hold");
    DomainEvent::OrderExpireRequested(OrderExpireRequested {
        order_id,
        hold_until: chrono::DateTime::from_timestamp_millis(until).unwrap(),
        epoch,
    })
}

fn expiry_refusal(events: &[DomainEvent]) -> String {
    match events {
        [DomainEvent::OrderExpiryRefused(e)] => e.reason.clone(),
        other => panic!("expected one expiry refusal, got {:?}", types(other)),
    }
}

#[test]
fn a_held_order_reserves_until_committed_then_ships_as_any() {
    let mut w = World::new();
    let p = w.product("H", 0, 0, 10);
    let (order, placed) = place_held(&w, p, 4, 60);
    let decided = w.one(placed);
    assert!(matches!(&decided[..], [DomainEvent::OrderConfirmed(c)] if c.hold_until.is_some()));
    assert_eq!(w.status(order), OrderStatus::Held);
    assert_eq!(w.stock(p), (10, 4));
    // Not sold yet: a hold is no revenue.
    assert_eq!(w.inventory.orders[&order].sold_cents(), 0);
    // Unpaid: no shipping.
    assert!(refusal(&w.one(ship(order))).contains("held: commit it"));
    assert_eq!(types(&w.one(commit(order))), ["order.committed"]);
    assert_eq!(w.status(order), OrderStatus::Confirmed);
    assert_eq!(w.stock(p), (10, 4), "the reservation stays");
    assert_eq!(w.inventory.orders[&order].sold_cents(), 1000);
    // The hold's deadline passes: a late request changes nothing.
    w.clock += 120;
    let late = w.one(expire(&w, order, 1));
    assert!(expiry_refusal(&late).contains("committed before its hold ran out"));
    assert_eq!(types(&w.one(ship(order))), ["order.shipped"]);
    assert_eq!(w.stock(p), (6, 0));
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_hold_not_committed_expires_and_releases_its_stock() {
    let mut w = World::new();
    let p = w.product("H", 0, 0, 5);
    let (order, placed) = place_held(&w, p, 5, 10);
    w.one(placed);
    assert_eq!(w.inventory.products[&p].available(), 0);
    // Another customer finds nothing while it is held.
    let (other, placed) = place(&[(p, 1)]);
    w.one(placed);
    assert_eq!(w.status(other), OrderStatus::Rejected);

    w.clock += 10;
    assert_eq!(types(&w.one(expire(&w, order, 3))), ["order.expired"]);
    assert_eq!(w.status(order), OrderStatus::Expired);
    assert_eq!(w.stock(p), (5, 0));
    let released = w.inventory.journal.last().unwrap();
    assert_eq!(released.kind, MovementKind::Released);
    assert!(w.inventory.invariant_violations().is_empty());

    // The same hold asked again (another owner, a zombie): refused, once.
    let again = w.one(expire(&w, order, 2));
    assert!(expiry_refusal(&again).contains("already expired"));
    assert_eq!(w.stock(p), (5, 0));
    // A commit after the expiry is refused with what to do.
    let message = refusal(&w.one(commit(order)));
    assert!(
        message.contains("hold expired") && message.contains("place the order again"),
        "{message}"
    );
    assert_eq!(w.status(order), OrderStatus::Expired);
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_request_sent_before_the_deadline_or_for_another_hold_is_refused() {
    let mut w = World::new();
    let p = w.product("H", 0, 0, 5);
    let (order, placed) = place_held(&w, p, 1, 30);
    w.one(placed);
    // The request's own time is before the hold's end (a clock running
    // ahead, a forged request): refused, the hold goes on.
    assert!(expiry_refusal(&w.one(expire(&w, order, 1))).starts_with("not due"));
    let mut wrong = expire(&w, order, 1);
    if let DomainEvent::OrderExpireRequested(e) = &mut wrong {
        e.hold_until = at(0);
    }
    w.clock += 60;
    assert!(expiry_refusal(&w.one(wrong)).contains("names a hold until"));
    assert_eq!(w.status(order), OrderStatus::Held);
    let unknown = DomainEvent::OrderExpireRequested(OrderExpireRequested {
        order_id: OrderId::new(),
        hold_until: at(0),
        epoch: 1,
    });
    assert_eq!(expiry_refusal(&w.one(unknown)), "no such order");
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_held_order_may_be_cancelled_and_then_does_not_expire() {
    let mut w = World::new();
    let p = w.product("H", 0, 0, 5);
    let (order, placed) = place_held(&w, p, 2, 5);
    // A cancel that came before the decision: cancelled once held.
    let decided = w.batch_of(vec![placed, cancel(order)]);
    assert_eq!(types(&decided), ["order.confirmed", "order.cancelled"]);
    assert_eq!(w.status(order), OrderStatus::Cancelled);
    assert_eq!(w.stock(p), (5, 0));
    w.clock += 10;
    assert!(expiry_refusal(&w.one(expire(&w, order, 1))).contains("cancelled"));
    assert!(refusal(&w.one(commit(order))).contains("cancelled"));
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn commands_on_holds_name_what_to_do() {
    for (command, status, allowed) in [
        (OrderCommand::Commit, OrderStatus::Held, true),
        (OrderCommand::Cancel, OrderStatus::Held, true),
        (OrderCommand::Ship, OrderStatus::Held, false),
        (OrderCommand::Commit, OrderStatus::Confirmed, false),
        (OrderCommand::Commit, OrderStatus::Expired, false),
        (OrderCommand::Cancel, OrderStatus::Expired, false),
        (OrderCommand::Commit, OrderStatus::Pending, false),
    ] {
        assert_eq!(
            command.refusal(status).is_none(),
            allowed,
            "{command:?} of {status}"
        );
    }
}

#[test]
fn an_older_placement_and_confirmation_read_as_no_hold() {
    let order_id = OrderId::new();
    let v1 = crate::domain::Envelope {
        event_id: uuid::Uuid::now_v7(),
        event_type: events::EventType::OrderPlaced.into(),
        key: order_id.to_string(),
        occurred_at: at(0),
        version: 1,
        payload: serde_json::json!({"order_id": order_id, "customer_email": "a@example.com",
            "items": [], "total": 0.0}),
        actor: None,
    };
    match DomainEvent::from_envelope(&v1).unwrap() {
        DomainEvent::OrderPlaced(e) => assert_eq!(e.hold_until, None),
        other => panic!("{other:?}"),
    }
    let v2 = crate::domain::Envelope {
        event_type: events::EventType::OrderConfirmed.into(),
        version: 2,
        payload: serde_json::json!({"order_id": order_id, "total": 0.0, "allocations": null}),
        ..v1
    };
    match DomainEvent::from_envelope(&v2).unwrap() {
        DomainEvent::OrderConfirmed(e) => assert_eq!(e.hold_until, None),
        other => panic!("{other:?}"),
    }
}
