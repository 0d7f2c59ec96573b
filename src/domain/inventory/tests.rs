//! Every transition of the inventory state machine, legal and illegal, and
//! property tests over random interleavings of commands.

use super::*;
use crate::domain::events::{
    OrderCancelRequested, OrderCancelled, OrderConfirmed, OrderPlaced, OrderReturnRequested,
    OrderShipRequested, OrderShipmentRequested, OrderShipped, ProductCreated, ProductQuantity,
    PurchaseOrderReceived, ReturnLine, StockAdjusted, StockAdjustmentRefused,
    StockAdjustmentRequested, StockCounted,
};
use crate::domain::status::{AdjustmentReason, AdjustmentRefusal, ReturnDisposition};
use crate::domain::Envelope;
use crate::domain::{AdjustmentId, LocationId, ReturnId, ShipmentId, TransferId};
use chrono::{DateTime, TimeZone, Utc};

pub(super) fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
}

/// A tiny driver: handles commands like a worker, keeping the archive in
/// the order the store writes it (each event, then its follow-ups: the
/// order the domain applied them).
pub(super) struct World {
    pub(super) inventory: Inventory,
    archive: Vec<Envelope>,
    /// Seconds since the test's epoch: each command is one later.
    pub(super) clock: i64,
}

impl World {
    pub(super) fn new() -> World {
        World {
            inventory: Inventory::default(),
            archive: Vec::new(),
            clock: 0,
        }
    }

    /// Handles one command; returns its follow-ups.
    pub(super) fn step(&mut self, command: DomainEvent) -> Vec<DomainEvent> {
        self.clock += 1;
        let envelope = command.clone().into_envelope(at(self.clock));
        self.archive.push(envelope.clone());
        let follow_ups = self
            .inventory
            .handle(&envelope, &command, at(self.clock))
            .unwrap();
        self.archive
            .extend(follow_ups.iter().map(|(env, _)| env.clone()));
        follow_ups.into_iter().map(|(_, e)| e).collect()
    }

    /// Handles a batch of commands; returns the follow-ups' events.
    pub(super) fn batch_of(&mut self, commands: Vec<DomainEvent>) -> Vec<DomainEvent> {
        self.batch(commands)
    }

    fn batch(&mut self, commands: Vec<DomainEvent>) -> Vec<DomainEvent> {
        commands
            .into_iter()
            .flat_map(|command| self.step(command))
            .collect()
    }

    pub(super) fn one(&mut self, command: DomainEvent) -> Vec<DomainEvent> {
        self.batch(vec![command])
    }

    /// What `streamstock rebuild` does: apply the archive, deciding nothing.
    pub(super) fn replayed(&self) -> Inventory {
        // The strategy only decides; copied so that states compare equal.
        let mut fresh = Inventory {
            strategy: self.inventory.strategy,
            ..Inventory::default()
        };
        for envelope in &self.archive {
            let event = DomainEvent::from_envelope(envelope).unwrap();
            fresh.apply_enveloped(envelope, &event).unwrap();
        }
        fresh
    }

    pub(super) fn product(
        &mut self,
        sku: &str,
        threshold: i64,
        reorder: i64,
        stock: i64,
    ) -> ProductId {
        let id = ProductId::new();
        self.one(DomainEvent::ProductCreated(ProductCreated {
            product_id: id,
            sku: sku.into(),
            name: sku.into(),
            price: Money::from_cents(250).unwrap(),
            category_name: "c".into(),
            low_stock_threshold: threshold,
            reorder_quantity: reorder,
        }));
        if stock > 0 {
            self.one(receive(id, stock));
        }
        id
    }

    pub(super) fn stock(&self, id: ProductId) -> (i64, i64) {
        let p = &self.inventory.products[&id];
        (p.on_hand, p.reserved)
    }

    pub(super) fn status(&self, order: OrderId) -> OrderStatus {
        self.inventory.orders[&order].status
    }
}

pub(super) fn receive(product_id: ProductId, quantity: i64) -> DomainEvent {
    DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id,
        quantity,
        purchase_order_id: None,
    })
}

pub(super) fn place(lines: &[(ProductId, i64)]) -> (OrderId, DomainEvent) {
    let order_id = OrderId::new();
    let items: Vec<OrderLine> = lines
        .iter()
        .map(|&(product_id, quantity)| OrderLine {
            product_id,
            quantity,
            unit_price: Money::from_cents(250).unwrap(),
        })
        .collect();
    let total = items.iter().fold(Money::default(), |t, l| {
        t.plus(l.unit_price.times(l.quantity))
    });
    let event = DomainEvent::OrderPlaced(OrderPlaced {
        order_id,
        customer_email: "c@example.com".into(),
        items,
        total,
        hold_until: None,
    });
    (order_id, event)
}

pub(super) fn cancel(order_id: OrderId) -> DomainEvent {
    DomainEvent::OrderCancelRequested(OrderCancelRequested { order_id })
}

pub(super) fn ship(order_id: OrderId) -> DomainEvent {
    DomainEvent::OrderShipRequested(OrderShipRequested { order_id })
}

/// An `order.shipped` as v1 wrote it (upcast): every unshipped unit.
fn shipped_whole(order_id: OrderId) -> DomainEvent {
    DomainEvent::OrderShipped(OrderShipped {
        order_id,
        shipment_id: None,
        lines: None,
        complete: true,
    })
}

pub(super) fn ship_lines(order_id: OrderId, lines: &[(ProductId, i64)]) -> DomainEvent {
    DomainEvent::OrderShipmentRequested(OrderShipmentRequested {
        order_id,
        shipment_id: ShipmentId::new(),
        lines: lines
            .iter()
            .map(|&(product_id, quantity)| ProductQuantity {
                product_id,
                quantity,
                location_id: None,
            })
            .collect(),
    })
}

pub(super) fn take_back(
    order_id: OrderId,
    lines: &[(ProductId, i64, ReturnDisposition)],
) -> DomainEvent {
    DomainEvent::OrderReturnRequested(OrderReturnRequested {
        order_id,
        return_id: ReturnId::new(),
        lines: lines
            .iter()
            .map(|&(product_id, quantity, disposition)| ReturnLine {
                product_id,
                quantity,
                disposition,
            })
            .collect(),
        reason: "changed mind".into(),
        location_id: None,
    })
}

pub(super) fn adjust(
    product_id: ProductId,
    delta: i64,
    expected_on_hand: Option<i64>,
) -> DomainEvent {
    DomainEvent::StockAdjustmentRequested(StockAdjustmentRequested {
        location_id: None,
        adjustment_id: AdjustmentId::new(),
        product_id,
        delta,
        reason: if delta < 0 {
            AdjustmentReason::Damaged
        } else {
            AdjustmentReason::Found
        },
        reference: Some("RMA-7".into()),
        note: None,
        expected_on_hand,
    })
}

/// A count of `counted` units made at `at` (the World's clock, seconds).
pub(super) fn count(product_id: ProductId, counted: i64, at_second: i64) -> DomainEvent {
    DomainEvent::StockCounted(StockCounted {
        location_id: None,
        adjustment_id: AdjustmentId::new(),
        product_id,
        counted,
        counted_at: at(at_second).timestamp_millis(),
        expected_on_hand: None,
        reference: None,
        note: None,
    })
}

fn adjusted_by(events: &[DomainEvent]) -> (i64, AdjustmentReason, Option<i64>) {
    match events.first() {
        Some(DomainEvent::StockAdjusted(a)) => (a.delta, a.reason, a.counted),
        other => panic!("expected stock.adjusted, got {other:?}"),
    }
}

fn adjustment_refused(events: &[DomainEvent]) -> &StockAdjustmentRefused {
    match events.first() {
        Some(DomainEvent::StockAdjustmentRefused(refused)) => refused,
        other => panic!("expected a refused adjustment, got {other:?}"),
    }
}

pub(super) fn types(events: &[DomainEvent]) -> Vec<&'static str> {
    events.iter().map(DomainEvent::event_type).collect()
}

pub(super) fn refusal(events: &[DomainEvent]) -> String {
    match events {
        // A shipment's or return's refusal comes first as its own event.
        [DomainEvent::AlertRaised(a)]
        | [DomainEvent::OrderShipmentRefused(_)
        | DomainEvent::OrderReturnRefused(_)
        | DomainEvent::TransferRefused(_), DomainEvent::AlertRaised(a)]
            if a.kind == AlertKind::CommandRefused =>
        {
            a.message.clone()
        }
        other => panic!("expected one refusal, got {other:?}"),
    }
}

#[test]
fn placed_order_is_confirmed_and_reserves() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 3), (a, 2)]);
    assert_eq!(types(&w.one(placed)), ["order.confirmed"]);
    assert_eq!(w.status(order), OrderStatus::Confirmed);
    assert_eq!(w.stock(a), (10, 5));
    assert!(w.inventory.orders[&order].decided_at.is_some());
}

#[test]
fn short_order_is_rejected_whole_with_a_reason() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let b = w.product("B-7", 0, 0, 1);
    let (order, placed) = place(&[(a, 1), (b, 2)]);
    let follow = w.one(placed);
    assert_eq!(types(&follow), ["order.rejected", "alert.raised"]);
    assert_eq!(w.status(order), OrderStatus::Rejected);
    let reason = w.inventory.orders[&order].reason.clone().unwrap();
    assert!(
        reason.contains("B-7") && reason.contains("short by 1"),
        "{reason}"
    );
    assert_eq!(w.stock(a), (10, 0), "nothing reserved");
}

#[test]
fn ship_commits_the_reservation() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    w.one(placed);
    assert_eq!(types(&w.one(ship(order))), ["order.shipped"]);
    assert_eq!(w.status(order), OrderStatus::Shipped);
    assert_eq!(w.stock(a), (6, 0));
    assert_eq!(w.inventory.products[&a].shipped_total, 4);
}

#[test]
fn cancel_releases_the_reservation() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    w.one(placed);
    assert_eq!(types(&w.one(cancel(order))), ["order.cancelled"]);
    assert_eq!(w.status(order), OrderStatus::Cancelled);
    assert_eq!(w.stock(a), (10, 0));
}

#[test]
fn cancel_before_the_decision_cancels_once_decided() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    // The placement is applied but not decided yet (as rebuild sees it, or
    // a worker that decides later): the cancel is noted...
    let envelope = placed.clone().into_envelope(at(100));
    w.inventory.apply(&placed, 0).unwrap();
    assert!(w.one(cancel(order)).is_empty());
    assert!(w.inventory.orders[&order].cancel_requested);
    // ...and carried out when the confirmation comes.
    let confirmed = DomainEvent::OrderConfirmed(OrderConfirmed {
        order_id: order,
        total: Money::from_cents(1000).unwrap(),
        allocations: None,
        hold_until: None,
        backordered: Vec::new(),
    });
    let follow = w.inventory.handle(&envelope, &confirmed, at(101)).unwrap();
    assert_eq!(
        types(&follow.into_iter().map(|(_, e)| e).collect::<Vec<_>>()),
        ["order.cancelled"]
    );
    assert_eq!(w.status(order), OrderStatus::Cancelled);
    assert_eq!(w.stock(a), (10, 0));
    assert!(!w.inventory.orders[&order].cancel_requested);
}

#[test]
fn cancel_in_the_same_batch_as_the_placement_cancels_it() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    assert_eq!(
        types(&w.batch(vec![placed, cancel(order)])),
        ["order.confirmed", "order.cancelled"]
    );
    assert_eq!(w.status(order), OrderStatus::Cancelled);
    assert_eq!(w.stock(a), (10, 0));
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn commands_in_the_wrong_state_are_refused_with_a_reason() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 5);
    let (shipped, placed) = place(&[(a, 1)]);
    w.one(placed);
    w.one(ship(shipped));
    let (cancelled, placed) = place(&[(a, 1)]);
    w.one(placed);
    w.one(cancel(cancelled));
    let (rejected, placed) = place(&[(a, 100)]);
    w.one(placed);
    let before = w.inventory.clone();

    assert!(refusal(&w.one(cancel(shipped))).contains("already shipped"));
    assert!(refusal(&w.one(ship(shipped))).contains("already shipped"));
    assert!(refusal(&w.one(ship(cancelled))).contains("was cancelled"));
    assert!(refusal(&w.one(cancel(cancelled))).contains("already cancelled"));
    assert!(refusal(&w.one(ship(rejected))).contains("was rejected"));
    assert!(refusal(&w.one(cancel(rejected))).contains("was rejected"));
    let ghost = OrderId::new();
    assert!(refusal(&w.one(ship(ghost))).contains("no such order"));
    assert!(refusal(&w.one(cancel(ghost))).contains("no such order"));
    assert_eq!(w.inventory, before, "refusals change no state");
}

#[test]
fn shipping_a_pending_order_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 5);
    let (order, placed) = place(&[(a, 1)]);
    w.inventory.apply(&placed, 0).unwrap();
    assert!(refusal(&w.one(ship(order))).contains("not decided yet"));
}

#[test]
fn decision_events_that_do_not_fit_the_state_are_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 5);
    let (order, placed) = place(&[(a, 1)]);
    w.one(placed);
    let total = Money::from_cents(250).unwrap();
    let confirmed = DomainEvent::OrderConfirmed(OrderConfirmed {
        order_id: order,
        total,
        allocations: None,
        hold_until: None,
        backordered: Vec::new(),
    });
    let shipped = shipped_whole(order);
    let cancelled = DomainEvent::OrderCancelled(OrderCancelled { order_id: order });
    let before = w.inventory.clone();
    let err = w.inventory.clone().apply(&confirmed, 0).unwrap_err();
    assert!(
        err.0.contains("is CONFIRMED; only a PENDING order"),
        "{err}"
    );
    w.inventory.apply(&shipped, 0).unwrap();
    assert!(w
        .inventory
        .clone()
        .apply(&cancelled, 0)
        .unwrap_err()
        .0
        .contains("is SHIPPED"));
    assert!(w
        .inventory
        .clone()
        .apply(&shipped, 0)
        .unwrap_err()
        .0
        .contains("is SHIPPED"));
    let ghost = shipped_whole(OrderId::new());
    assert!(before
        .clone()
        .apply(&ghost, 0)
        .unwrap_err()
        .0
        .contains("unknown"));
    let negative = receive(a, -3);
    assert!(before
        .clone()
        .apply(&negative, 0)
        .unwrap_err()
        .0
        .contains("must be positive"));
}

#[test]
fn duplicate_product_is_refused_but_stock_may_come_first() {
    let mut inventory = Inventory::default();
    let id = ProductId::new();
    inventory.apply(&receive(id, 4), 0).unwrap();
    let created = DomainEvent::ProductCreated(ProductCreated {
        product_id: id,
        sku: "S".into(),
        name: "S".into(),
        price: Money::from_cents(1).unwrap(),
        category_name: "c".into(),
        low_stock_threshold: 1,
        reorder_quantity: 1,
    });
    inventory.apply(&created, 0).unwrap();
    assert_eq!(inventory.products[&id].on_hand, 4);
    assert!(inventory
        .apply(&created, 0)
        .unwrap_err()
        .0
        .contains("already exists"));
}

#[test]
fn restock_cycle_low_stock_once_per_crossing_one_open_po() {
    let mut w = World::new();
    let a = w.product("A", 5, 20, 10);
    // 10 → 4: crosses below 5.
    let (_, placed) = place(&[(a, 6)]);
    let follow = w.one(placed);
    assert_eq!(
        types(&follow),
        [
            "order.confirmed",
            "stock.low",
            "purchase_order.drafted",
            "alert.raised"
        ]
    );
    let DomainEvent::PurchaseOrderDrafted(po) = &follow[2] else {
        unreachable!()
    };
    assert_eq!((po.product_id, po.quantity), (a, 20));
    assert_eq!(
        w.inventory.products[&a].open_purchase_order,
        Some(po.purchase_order_id)
    );
    // 4 → 3: already below, no second notice.
    let (_, placed) = place(&[(a, 1)]);
    assert_eq!(types(&w.one(placed)), ["order.confirmed"]);
    // Receiving the purchase order closes it and brings the stock in.
    let received = DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
        purchase_order_id: po.purchase_order_id,
        product_id: a,
        location_id: None,
    });
    assert_eq!(types(&w.one(received.clone())), ["stock.received"]);
    assert_eq!(w.stock(a), (30, 7));
    let closed = &w.inventory.purchase_orders[&po.purchase_order_id];
    assert_eq!(closed.status, PurchaseOrderStatus::Received);
    assert_eq!(w.inventory.products[&a].open_purchase_order, None);
    // A second receipt of the same purchase order is refused.
    assert!(refusal(&w.one(received)).contains("already received"));
    assert_eq!(w.stock(a), (30, 7));
    // Back above the threshold, a new crossing drafts a new purchase order.
    let (_, placed) = place(&[(a, 20)]);
    assert_eq!(
        types(&w.one(placed)),
        [
            "order.confirmed",
            "stock.low",
            "purchase_order.drafted",
            "alert.raised"
        ]
    );
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_crossing_with_a_purchase_order_open_drafts_no_second_one() {
    let mut w = World::new();
    let a = w.product("A", 5, 20, 6);
    let (_, placed) = place(&[(a, 2)]);
    assert_eq!(
        w.one(placed).len(),
        4,
        "crossing: confirmed, low, drafted, alert"
    );
    // A direct receipt lifts it above again; the purchase order stays open.
    w.one(receive(a, 10));
    let (_, placed) = place(&[(a, 12)]);
    assert_eq!(
        types(&w.one(placed)),
        ["order.confirmed", "stock.low", "alert.raised"]
    );
    assert_eq!(
        w.inventory
            .purchase_orders
            .values()
            .filter(|p| p.status == PurchaseOrderStatus::Open)
            .count(),
        1
    );
}

#[test]
fn receiving_an_unknown_or_foreign_purchase_order_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 5, 20, 6);
    let b = w.product("B", 0, 0, 0);
    let ghost = PurchaseOrderId::new();
    let message = refusal(
        &w.one(DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
            purchase_order_id: ghost,
            product_id: a,
            location_id: None,
        })),
    );
    assert!(message.contains("no such purchase order"), "{message}");
    let (_, placed) = place(&[(a, 2)]);
    let follow = w.one(placed);
    let DomainEvent::PurchaseOrderDrafted(po) = &follow[2] else {
        unreachable!()
    };
    let message = refusal(
        &w.one(DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived {
            purchase_order_id: po.purchase_order_id,
            product_id: b,
            location_id: None,
        })),
    );
    assert!(message.contains("is not for product"), "{message}");
    // A stock.received naming a closed or foreign purchase order cannot apply.
    let bad = DomainEvent::StockReceived(StockReceived {
        location_id: None,
        product_id: b,
        quantity: 20,
        purchase_order_id: Some(po.purchase_order_id),
    });
    assert!(w.inventory.clone().apply(&bad, 0).is_err());
}

#[test]
fn an_adjustment_changes_on_hand_by_its_delta_with_its_cause() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let decided = w.one(adjust(a, -3, None));
    let [DomainEvent::StockAdjusted(adjusted)] = decided.as_slice() else {
        panic!("expected stock.adjusted, got {decided:?}");
    };
    assert_eq!(
        (adjusted.delta, adjusted.reason),
        (-3, AdjustmentReason::Damaged)
    );
    assert_eq!(adjusted.reference.as_deref(), Some("RMA-7"));
    assert_eq!(w.stock(a), (7, 0));
    assert_eq!(w.inventory.products[&a].adjusted_total, -3);
    w.one(adjust(a, 5, Some(7)));
    assert_eq!(w.stock(a), (12, 0));
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn an_adjustment_expecting_another_on_hand_is_refused_with_the_actual_figure() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (_, placed) = place(&[(a, 4)]);
    w.one(placed);
    let decided = w.one(adjust(a, -1, Some(9)));
    let refused = adjustment_refused(&decided);
    assert_eq!(refused.refusal, AdjustmentRefusal::OnHandChanged);
    assert_eq!((refused.on_hand, refused.reserved), (10, 4));
    assert!(
        refused
            .message
            .contains("on_hand is 10, not the 9 expected"),
        "{}",
        refused.message
    );
    assert_eq!(decided.len(), 1, "a stale compare-and-set raises no alert");
    assert_eq!(w.stock(a), (10, 4), "nothing changed");
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn an_adjustment_below_reserved_is_refused_naming_the_orders_holding_the_stock() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (first, placed) = place(&[(a, 4)]);
    w.one(placed);
    let (second, placed) = place(&[(a, 3)]);
    w.one(placed);
    let decided = w.one(adjust(a, -4, Some(10)));
    let refused = adjustment_refused(&decided);
    assert_eq!(refused.refusal, AdjustmentRefusal::BelowReserved);
    let mut holders = vec![first, second];
    holders.sort();
    assert_eq!(refused.held_by, holders);
    let DomainEvent::AlertRaised(alert) = &decided[1] else {
        panic!("expected an alert, got {decided:?}");
    };
    assert_eq!(alert.kind, AlertKind::AdjustmentBelowReserved);
    for order in [first, second] {
        assert!(
            alert.message.contains(&order.to_string()),
            "{}",
            alert.message
        );
    }
    assert_eq!(w.stock(a), (10, 7));
    // Exactly down to reserved is allowed.
    assert_eq!(types(&w.one(adjust(a, -3, None))), ["stock.adjusted"]);
    assert_eq!(w.stock(a), (7, 7));
    assert!(w.inventory.invariant_violations().is_empty());
}

#[test]
fn an_adjustment_of_an_unknown_product_is_refused() {
    let mut w = World::new();
    let decided = w.one(adjust(ProductId::new(), 2, None));
    assert_eq!(
        adjustment_refused(&decided).refusal,
        AdjustmentRefusal::UnknownProduct
    );
    assert!(w.inventory.products.is_empty());
}

#[test]
fn an_adjustment_that_crosses_the_threshold_raises_low_stock_and_a_purchase_order() {
    let mut w = World::new();
    let a = w.product("A", 5, 20, 8);
    let decided = w.one(adjust(a, -4, None));
    assert_eq!(
        types(&decided),
        [
            "stock.adjusted",
            "stock.low",
            "purchase_order.drafted",
            "alert.raised"
        ]
    );
    // Already below: no second notice.
    assert_eq!(types(&w.one(adjust(a, -1, None))), ["stock.adjusted"]);
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_stock_adjusted_event_below_reserved_from_elsewhere_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 5);
    let (_, placed) = place(&[(a, 5)]);
    w.one(placed);
    let foreign = DomainEvent::StockAdjusted(StockAdjusted {
        location_id: None,
        adjustment_id: AdjustmentId::new(),
        product_id: a,
        delta: -1,
        reason: AdjustmentReason::Shrinkage,
        reference: None,
        note: None,
        counted: None,
    });
    let refused = w.inventory.clone().apply(&foreign, 0).unwrap_err();
    assert!(refused.0.contains("below reserved 5"), "{refused}");
}

#[test]
fn every_stock_movement_is_a_ledger_row_with_the_figures_after_it_and_its_cause() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 3)]);
    w.one(placed);
    w.one(ship(order));
    let (cancelled, placed) = place(&[(a, 2)]);
    w.one(placed);
    w.one(cancel(cancelled));
    w.one(adjust(a, -1, None));
    let rows: Vec<(i64, MovementKind, i64, i64, i64, i64)> = w
        .inventory
        .journal
        .iter()
        .map(|m| {
            (
                m.seq,
                m.kind,
                m.on_hand_delta,
                m.reserved_delta,
                m.on_hand,
                m.reserved,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, MovementKind::Received, 10, 0, 10, 0),
            (2, MovementKind::Reserved, 0, 3, 10, 3),
            (3, MovementKind::Shipped, -3, -3, 7, 0),
            (4, MovementKind::Reserved, 0, 2, 7, 2),
            (5, MovementKind::Released, 0, -2, 7, 0),
            (6, MovementKind::Adjusted, -1, 0, 6, 0),
        ]
    );
    let shipped = &w.inventory.journal[2];
    assert_eq!(shipped.cause.order_id, Some(order));
    assert_eq!(shipped.cause.event_type.name(), "order.shipped");
    let shipment = w
        .archive
        .iter()
        .find(|e| e.event_type.as_str() == "order.shipped")
        .unwrap();
    assert_eq!(shipped.event_id, shipment.event_id);
    let adjusted = &w.inventory.journal[5];
    assert_eq!(adjusted.cause.reason, Some(AdjustmentReason::Damaged));
    assert!(adjusted.cause.adjustment_id.is_some());
    assert_eq!(w.inventory.products[&a].movements, 6);
    assert!(w.inventory.invariant_violations().is_empty());
    // Replayed, the archive records the very same rows.
    assert_eq!(w.replayed().journal, w.inventory.journal);
}

#[test]
fn a_count_records_its_difference_from_the_book_zero_included() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let now = w.clock;
    assert_eq!(
        adjusted_by(&w.one(count(a, 10, now))),
        (0, AdjustmentReason::CycleCount, Some(10)),
        "a count equal to the book is a zero-delta count"
    );
    assert_eq!(
        adjusted_by(&w.one(count(a, 7, w.clock))),
        (-3, AdjustmentReason::CycleCount, Some(7))
    );
    assert_eq!(w.stock(a), (7, 0));
    assert_eq!(
        w.inventory.journal.last().unwrap().kind,
        MovementKind::Adjusted
    );
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_count_made_before_later_movements_adds_them_back() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    // The shelf is counted (9: one unit lost), then an order ships 3 and
    // 5 arrive, then the count is sent.
    let counted_at = w.clock;
    let (order, placed) = place(&[(a, 3)]);
    w.one(placed);
    w.one(ship(order));
    w.one(receive(a, 5));
    assert_eq!(w.stock(a), (12, 0));
    assert_eq!(
        w.inventory
            .on_hand_as_of(a, LocationId::DEFAULT, at(counted_at).timestamp_millis()),
        10
    );
    assert_eq!(adjusted_by(&w.one(count(a, 9, counted_at))).0, -1);
    assert_eq!(w.stock(a), (11, 0));
    // Written movements (loaded by the store) count as the journal's do.
    let mut loaded = w.inventory.clone();
    loaded.journal.clear();
    loaded.moved_since.insert(
        (a, LocationId::DEFAULT, at(counted_at).timestamp_millis()),
        2 - 1,
    );
    assert_eq!(
        loaded.on_hand_as_of(a, LocationId::DEFAULT, at(counted_at).timestamp_millis()),
        10
    );
}

#[test]
fn a_count_below_what_orders_hold_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (_, placed) = place(&[(a, 6)]);
    w.one(placed);
    let decided = w.one(count(a, 4, w.clock));
    let refused = adjustment_refused(&decided);
    assert_eq!(refused.refusal, AdjustmentRefusal::BelowReserved);
    assert_eq!(refused.delta, -6);
    assert!(
        refused.message.contains("a count of 4"),
        "{}",
        refused.message
    );
    assert_eq!(w.stock(a), (10, 6));
}

#[test]
fn a_partial_shipment_ships_some_units_and_the_rest_ships_later() {
    let mut w = World::new();
    let (a, b) = (w.product("A", 0, 0, 10), w.product("B", 0, 0, 10));
    let (order, placed) = place(&[(a, 3), (b, 2), (a, 1)]);
    w.one(placed);
    assert_eq!(w.stock(a), (10, 4));
    // 4 of A span two lines: the first takes 3, the third 1.
    let follow = w.one(ship_lines(order, &[(a, 4)]));
    assert_eq!(types(&follow), ["order.shipped"]);
    let DomainEvent::OrderShipped(shipped) = &follow[0] else {
        unreachable!()
    };
    assert!(!shipped.complete);
    let lines = shipped.lines.as_ref().unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.line_no, l.quantity))
            .collect::<Vec<_>>(),
        [(0, 3), (2, 1)]
    );
    assert_eq!(w.status(order), OrderStatus::PartiallyShipped);
    assert_eq!((w.stock(a), w.stock(b)), ((6, 0), (10, 2)));
    // The old ship command ships what is left, and completes the order.
    w.one(ship(order));
    assert_eq!(w.status(order), OrderStatus::Shipped);
    assert_eq!(w.stock(b), (8, 0));
    assert!(w.inventory.invariant_violations().is_empty());
}

#[test]
fn shipping_more_than_a_line_has_unshipped_is_refused_with_a_reason() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 3)]);
    w.one(placed);
    w.one(ship_lines(order, &[(a, 2)]));
    let follow = w.one(ship_lines(order, &[(a, 2)]));
    assert_eq!(types(&follow), ["order.shipment_refused", "alert.raised"]);
    assert!(refusal(&follow).contains("2 of"), "{}", refusal(&follow));
    assert!(
        refusal(&follow).contains("has 1 unshipped"),
        "{}",
        refusal(&follow)
    );
    assert_eq!(w.stock(a), (8, 1), "nothing moved");
    let stranger = ProductId::new();
    let follow = w.one(ship_lines(order, &[(stranger, 1)]));
    assert!(refusal(&follow).contains("not in the order"));
}

#[test]
fn cancelling_a_partly_shipped_order_releases_only_what_did_not_ship() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 5)]);
    w.one(placed);
    w.one(ship_lines(order, &[(a, 2)]));
    assert_eq!(w.stock(a), (8, 3));
    w.one(cancel(order));
    assert_eq!(w.status(order), OrderStatus::Cancelled);
    assert_eq!(w.stock(a), (8, 0));
    // The shipped units stay sold: 2 × 2.50.
    assert_eq!(w.inventory.orders[&order].sold_cents(), 500);
    assert!(w.inventory.invariant_violations().is_empty());
}

#[test]
fn a_return_restocks_or_records_damage_and_takes_the_value_off_the_sales() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    w.one(placed);
    w.one(ship(order));
    assert_eq!(w.stock(a), (6, 0));
    let follow = w.one(take_back(
        order,
        &[
            (a, 2, ReturnDisposition::Restock),
            (a, 1, ReturnDisposition::Damaged),
        ],
    ));
    let DomainEvent::OrderReturned(returned) = &follow[0] else {
        panic!("{follow:?}")
    };
    assert_eq!(returned.refund.cents(), 750);
    assert_eq!(w.stock(a), (8, 0), "only the restocked units come back");
    let product = &w.inventory.products[&a];
    assert_eq!(product.restocked_total, 2);
    let line = &w.inventory.orders[&order].lines[0];
    assert_eq!((line.shipped, line.returned), (4, 3));
    assert_eq!(w.inventory.orders[&order].sold_cents(), 250);
    let last = w.inventory.journal.last().unwrap();
    assert_eq!(
        (last.kind, last.on_hand_delta, last.cause.order_id),
        (MovementKind::Returned, 2, Some(order))
    );
    assert!(w.inventory.invariant_violations().is_empty());
    assert_eq!(w.replayed(), w.inventory);
}

#[test]
fn a_return_larger_than_shipped_and_not_returned_is_refused() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 4)]);
    w.one(placed);
    let follow = w.one(take_back(order, &[(a, 1, ReturnDisposition::Restock)]));
    assert_eq!(types(&follow), ["order.return_refused", "alert.raised"]);
    assert!(
        refusal(&follow).contains("shipped nothing"),
        "{}",
        refusal(&follow)
    );
    w.one(ship_lines(order, &[(a, 2)]));
    w.one(take_back(order, &[(a, 1, ReturnDisposition::Restock)]));
    let follow = w.one(take_back(order, &[(a, 2, ReturnDisposition::Damaged)]));
    assert!(
        refusal(&follow).contains("1 shipped and not returned"),
        "{}",
        refusal(&follow)
    );
    assert_eq!(w.stock(a), (9, 2));
}

#[test]
fn decided_shipments_and_returns_that_do_not_fit_are_refused_by_apply() {
    let mut w = World::new();
    let a = w.product("A", 0, 0, 10);
    let (order, placed) = place(&[(a, 2)]);
    w.one(placed);
    let too_many = DomainEvent::OrderShipped(OrderShipped {
        order_id: order,
        shipment_id: None,
        lines: Some(vec![crate::domain::events::LineQuantity {
            line_no: 0,
            product_id: a,
            quantity: 3,
            location_id: None,
        }]),
        complete: true,
    });
    assert!(w.inventory.clone().apply(&too_many, 0).is_err());
    let not_complete = DomainEvent::OrderShipped(OrderShipped {
        order_id: order,
        shipment_id: None,
        lines: Some(vec![crate::domain::events::LineQuantity {
            line_no: 0,
            product_id: a,
            quantity: 2,
            location_id: None,
        }]),
        complete: false,
    });
    assert!(w
        .inventory
        .clone()
        .apply(&not_complete, 0)
        .unwrap_err()
        .0
        .contains("complete"));
}

#[test]
fn handling_is_deterministic() {
    let mut w = World::new();
    let a = w.product("A", 5, 20, 6);
    let (_, placed) = place(&[(a, 2)]);
    let envelope = placed.clone().into_envelope(at(50));
    let first = w
        .inventory
        .clone()
        .handle(&envelope, &placed, at(60))
        .unwrap();
    let again = w
        .inventory
        .clone()
        .handle(&envelope, &placed, at(60))
        .unwrap();
    assert_eq!(first, again);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const PRODUCTS: usize = 3;
    /// The default location and two more, of other priorities.
    const LOCATIONS: usize = 3;

    #[derive(Debug, Clone)]
    enum Command {
        Receive {
            product: usize,
            quantity: i64,
            location: usize,
        },
        /// Deactivates an active location, activates an inactive one.
        Toggle {
            location: usize,
        },
        Transfer {
            from: usize,
            to: usize,
            lines: Vec<(usize, i64)>,
        },
        /// Receives one of the transfers, `short` units short on its first
        /// line (or a stranger's id).
        ReceiveTransfer {
            transfer: usize,
            short: i64,
        },
        Place {
            lines: Vec<(usize, i64)>,
        },
        /// An order held for a checkout `ttl` seconds (commands).
        PlaceHeld {
            lines: Vec<(usize, i64)>,
            ttl: i64,
        },
        Commit {
            order: usize,
        },
        /// The sweep's request to expire an order's hold, due or not, from
        /// the owner of lease `epoch`.
        Expire {
            order: usize,
            epoch: u64,
        },
        PlaceUnknownProduct,
        /// Sets a product's backorder limit to what waits plus `room`.
        SetLimit {
            product: usize,
            room: i64,
        },
        Cancel {
            order: usize,
        },
        Ship {
            order: usize,
        },
        ShipSome {
            order: usize,
            line: usize,
            quantity: i64,
            from: Option<usize>,
        },
        Return {
            order: usize,
            line: usize,
            quantity: i64,
            restock: bool,
            location: usize,
        },
        CancelUnknownOrder,
        ReceivePurchaseOrder {
            product: usize,
        },
        ReceiveOldPurchaseOrder {
            product: usize,
        },
        Adjust {
            product: usize,
            delta: i64,
            compare: Option<i64>,
            location: usize,
        },
        Count {
            product: usize,
            counted: i64,
            seconds_ago: i64,
            location: usize,
        },
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            3 => (0..PRODUCTS, 1i64..15, 0..LOCATIONS).prop_map(|(product, quantity, location)| Command::Receive { product, quantity, location }),
            1 => (0..LOCATIONS).prop_map(|location| Command::Toggle { location }),
            2 => (0..LOCATIONS, 0..LOCATIONS, prop::collection::vec((0..PRODUCTS, 1i64..6), 1..3))
                .prop_map(|(from, to, lines)| Command::Transfer { from, to, lines }),
            2 => (0usize..16, 0i64..3).prop_map(|(transfer, short)| Command::ReceiveTransfer { transfer, short }),
            6 => prop::collection::vec((0..PRODUCTS, 1i64..6), 1..4).prop_map(|lines| Command::Place { lines }),
            1 => Just(Command::PlaceUnknownProduct),
            3 => (prop::collection::vec((0..PRODUCTS, 1i64..6), 1..3), 1i64..8).prop_map(|(lines, ttl)| Command::PlaceHeld { lines, ttl }),
            2 => (0usize..64).prop_map(|order| Command::Commit { order }),
            3 => (0usize..64, 1u64..3).prop_map(|(order, epoch)| Command::Expire { order, epoch }),
            2 => (0..PRODUCTS, 0i64..8).prop_map(|(product, room)| Command::SetLimit { product, room }),
            3 => (0usize..64).prop_map(|order| Command::Cancel { order }),
            3 => (0usize..64).prop_map(|order| Command::Ship { order }),
            3 => (0usize..64, 0usize..4, 1i64..4, prop::option::of(0..LOCATIONS)).prop_map(|(order, line, quantity, from)| Command::ShipSome { order, line, quantity, from }),
            3 => (0usize..64, 0usize..4, 1i64..4, any::<bool>(), 0..LOCATIONS).prop_map(|(order, line, quantity, restock, location)| Command::Return { order, line, quantity, restock, location }),
            1 => Just(Command::CancelUnknownOrder),
            2 => (0..PRODUCTS).prop_map(|product| Command::ReceivePurchaseOrder { product }),
            1 => (0..PRODUCTS).prop_map(|product| Command::ReceiveOldPurchaseOrder { product }),
            3 => (0..PRODUCTS, (-12i64..8).prop_filter("non-zero", |d| *d != 0), prop::option::of(-1i64..=1), 0..LOCATIONS)
                .prop_map(|(product, delta, compare, location)| Command::Adjust { product, delta, compare, location }),
            2 => (0..PRODUCTS, 0i64..20, 0i64..5, 0..LOCATIONS)
                .prop_map(|(product, counted, seconds_ago, location)| Command::Count { product, counted, seconds_ago, location }),
        ]
    }

    /// The product of an order's line `line` (wrapping), or an unknown one.
    fn line_product(w: &World, order: OrderId, line: usize) -> ProductId {
        match w.inventory.orders.get(&order) {
            Some(o) => o.lines[line % o.lines.len()].product_id,
            None => ProductId::new(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// After every command of a random interleaving, over three
        /// locations and under either allocation strategy:
        /// the business invariants hold, no order stays
        /// pending, stock.low comes exactly once per crossing, and replaying
        /// the archive without deciding gives the same state.
        #[test]
        fn invariants_hold_after_every_step(
            commands in prop::collection::vec(command(), 1..60),
            most_stock in any::<bool>(),
        ) {
            let mut w = World::new();
            if most_stock {
                w.inventory.strategy = AllocationStrategy::MostStock;
            }
            let products: Vec<ProductId> = (0..PRODUCTS)
                .map(|i| w.product(&format!("P{i}"), 4 + i as i64, 10 * (i as i64), 8))
                .collect();
            let mut locations = vec![LocationId::DEFAULT];
            for (i, priority) in [(1, -1), (2, 5)] {
                let id = LocationId::new();
                w.one(DomainEvent::LocationCreated(events::LocationCreated {
                    location_id: id,
                    code: format!("L{i}"),
                    name: format!("L{i}"),
                    priority,
                    active: true,
                }));
                locations.push(id);
            }
            let named = |l: usize| (l > 0).then(|| locations[l]);
            let mut transfers: Vec<TransferId> = Vec::new();
            let mut orders: Vec<OrderId> = Vec::new();
            let mut received_pos: Vec<(PurchaseOrderId, ProductId)> = Vec::new();
            for (step, command) in commands.into_iter().enumerate() {
                let available_before: Vec<i64> =
                    products.iter().map(|p| w.inventory.products[p].available()).collect();
                let is_adjustment = matches!(command, Command::Adjust { .. } | Command::Count { .. });
                let on_hand_and_transit: Vec<i64> = products.iter().map(|p| {
                    let p = &w.inventory.products[p];
                    p.on_hand + p.in_transit
                }).collect();
                let is_transfer = matches!(command, Command::Transfer { .. });
                let is_receipt = matches!(command, Command::ReceiveTransfer { .. });
                let is_fulfilment = !orders.is_empty() && matches!(command, Command::ShipSome { .. } | Command::Return { .. });
                let is_expiry = matches!(command, Command::Expire { .. });
                let event = match command {
                    Command::Receive { product, quantity, location } => located(receive(products[product], quantity), named(location)),
                    Command::Transfer { from, to, lines } => {
                        let id = TransferId::new();
                        transfers.push(id);
                        DomainEvent::TransferRequested(events::TransferRequested {
                            transfer_id: id,
                            from: locations[from],
                            to: locations[to],
                            lines: lines.iter().map(|&(p, q)| ProductQuantity { product_id: products[p], quantity: q, location_id: None }).collect(),
                        })
                    }
                    Command::ReceiveTransfer { transfer, short } => {
                        let id = if transfers.is_empty() { TransferId::new() } else { transfers[transfer % transfers.len()] };
                        let lines = match w.inventory.transfers.get(&id) {
                            Some(t) => vec![events::ReceivedLine { product_id: t.lines[0].product_id, received: t.lines[0].quantity - short }],
                            None => Vec::new(),
                        };
                        DomainEvent::TransferReceiveRequested(events::TransferReceiveRequested { transfer_id: id, lines, discrepancy_reason: None })
                    }
                    Command::Toggle { location } => {
                        let id = locations[location];
                        DomainEvent::LocationUpdated(events::LocationUpdated {
                            location_id: id,
                            name: None,
                            priority: None,
                            active: Some(!w.inventory.locations[&id].active),
                        })
                    }
                    Command::Place { lines } => {
                        let lines: Vec<(ProductId, i64)> = lines.iter().map(|&(p, q)| (products[p], q)).collect();
                        let (id, placed) = place(&lines);
                        orders.push(id);
                        placed
                    }
                    Command::PlaceUnknownProduct => {
                        let (id, placed) = place(&[(ProductId::new(), 1)]);
                        orders.push(id);
                        placed
                    }
                    Command::PlaceHeld { lines, ttl } => {
                        let lines: Vec<(ProductId, i64)> = lines.iter().map(|&(p, q)| (products[p], q)).collect();
                        let (id, mut placed) = place(&lines);
                        if let DomainEvent::OrderPlaced(e) = &mut placed {
                            e.hold_until = Some(at(w.clock + 1 + ttl));
                        }
                        orders.push(id);
                        placed
                    }
                    Command::SetLimit { product, room } => {
                        let product_id = products[product];
                        let waiting = w.inventory.products[&product_id].backordered;
                        DomainEvent::ProductPolicySet(events::ProductPolicySet { product_id, backorder_limit: waiting + room })
                    }
                    Command::Commit { order } if !orders.is_empty() => {
                        DomainEvent::OrderCommitRequested(events::OrderCommitRequested { order_id: orders[order % orders.len()] })
                    }
                    Command::Expire { order, epoch } if !orders.is_empty() => {
                        let order_id = orders[order % orders.len()];
                        let until = w.inventory.orders.get(&order_id).and_then(|o| o.hold_until).unwrap_or(0);
                        DomainEvent::OrderExpireRequested(events::OrderExpireRequested {
                            order_id,
                            hold_until: DateTime::from_timestamp_millis(until).unwrap(),
                            epoch,
                        })
                    }
                    Command::Cancel { order } if !orders.is_empty() => cancel(orders[order % orders.len()]),
                    Command::Ship { order } if !orders.is_empty() => ship(orders[order % orders.len()]),
                    // A product of the order (one of its lines, or a
                    // stranger when the order is unknown), a quantity that
                    // may be more than the line has left.
                    Command::ShipSome { order, line, quantity, from } if !orders.is_empty() => {
                        let order = orders[order % orders.len()];
                        located(ship_lines(order, &[(line_product(&w, order, line), quantity)]), from.map(|l| locations[l]))
                    }
                    Command::Return { order, line, quantity, restock, location } if !orders.is_empty() => {
                        let order = orders[order % orders.len()];
                        let disposition = if restock { ReturnDisposition::Restock } else { ReturnDisposition::Damaged };
                        located(take_back(order, &[(line_product(&w, order, line), quantity, disposition)]), named(location))
                    }
                    Command::Cancel { .. } | Command::Ship { .. } | Command::ShipSome { .. }
                    | Command::Return { .. } | Command::Commit { .. } | Command::Expire { .. }
                    | Command::CancelUnknownOrder => cancel(OrderId::new()),
                    Command::ReceivePurchaseOrder { product } => {
                        let product_id = products[product];
                        match w.inventory.products[&product_id].open_purchase_order {
                            Some(po) => {
                                received_pos.push((po, product_id));
                                DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived { purchase_order_id: po, product_id, location_id: None })
                            }
                            None => receive(product_id, 1),
                        }
                    }
                    Command::ReceiveOldPurchaseOrder { product } => match received_pos.get(product) {
                        Some(&(po, product_id)) => DomainEvent::PurchaseOrderReceived(PurchaseOrderReceived { purchase_order_id: po, product_id, location_id: None }),
                        None => receive(products[product], 2),
                    },
                    // The expected figure is on-hand, or one off (a stale read).
                    Command::Adjust { product, delta, compare, location } => {
                        let on_hand = w.inventory.stock_at(products[product], locations[location]).on_hand;
                        located(adjust(products[product], delta, compare.map(|off| on_hand + off)), named(location))
                    }
                    // A count made a few commands ago: what it found, with
                    // what moved since, becomes on-hand (unless refused).
                    Command::Count { product, counted, seconds_ago, location } => {
                        located(count(products[product], counted, w.clock - seconds_ago), named(location))
                    }
                };
                let follow = w.step(event);

                let violations = w.inventory.invariant_violations();
                prop_assert!(violations.is_empty(), "step {}: {:?}", step, violations);
                // A transfer's shipment moves units from on-hand to in
                // transit: their sum is conserved.
                if is_transfer {
                    for (i, p) in products.iter().enumerate() {
                        let p = &w.inventory.products[p];
                        prop_assert_eq!(p.on_hand + p.in_transit, on_hand_and_transit[i], "a transfer changed product {}'s units", i);
                    }
                }
                // No confirmation allocates from an inactive location.
                for confirmed in follow.iter().filter_map(|e| match e { DomainEvent::OrderConfirmed(c) => c.allocations.as_ref(), _ => None }) {
                    for a in confirmed {
                        prop_assert!(w.inventory.locations[&a.location_id].active, "allocated at inactive {}", a.location_id);
                    }
                }
                let adjustment_decisions = follow.iter().filter(|e| matches!(e, DomainEvent::StockAdjusted(_) | DomainEvent::StockAdjustmentRefused(_))).count();
                // (A transfer's receipt adjusts a shortfall away as a transit loss.)
                if !is_receipt {
                    prop_assert_eq!(adjustment_decisions, usize::from(is_adjustment), "an adjustment is decided once");
                }
                let fulfilment_decisions = follow.iter().filter(|e| matches!(e, DomainEvent::OrderShipped(_) | DomainEvent::OrderShipmentRefused(_) | DomainEvent::OrderReturned(_) | DomainEvent::OrderReturnRefused(_))).count();
                if is_fulfilment {
                    prop_assert_eq!(fulfilment_decisions, 1, "a shipment or return is decided once");
                }
                // An expiry request is decided once; a hold expires only
                // when the request was sent at or past its deadline.
                // (Each command is one step: a product's limit set once.)
                let expiry_decisions: Vec<&DomainEvent> = follow.iter().filter(|e| matches!(e, DomainEvent::OrderExpired(_) | DomainEvent::OrderExpiryRefused(_))).collect();
                prop_assert_eq!(expiry_decisions.len(), usize::from(is_expiry && !orders.is_empty()), "an expiry request is decided once");
                for expired in follow.iter().filter_map(|e| match e { DomainEvent::OrderExpired(x) => Some(x.order_id), _ => None }) {
                    let until = w.inventory.orders[&expired].hold_until.unwrap();
                    prop_assert!(at(w.clock).timestamp_millis() >= until, "order {} expired before its hold ran out", expired);
                }
                // Fills go first in, first out: no order placed before a
                // filled one still waits for that product.
                for (filled, product) in follow.iter().filter_map(|e| match e { DomainEvent::OrderBackorderFilled(f) => Some((f.order_id, f.product_id)), _ => None }) {
                    let key = (w.inventory.orders[&filled].placed_at, filled);
                    for (id, order) in &w.inventory.orders {
                        let waits: i64 = order.lines.iter().filter(|l| l.product_id == product).map(|l| order.waiting_units(l)).sum();
                        prop_assert!(!((order.placed_at, *id) < key && waits > 0), "order {} filled before {}, which still waits", filled, id);
                    }
                }
                for (id, order) in &w.inventory.orders {
                    prop_assert!(
                        order.hold_until.is_some() || !matches!(order.status, OrderStatus::Held | OrderStatus::Expired),
                        "order {} without a hold is {}", id, order.status
                    );
                }
                for (id, order) in &w.inventory.orders {
                    prop_assert!(order.status != OrderStatus::Pending, "order {} left pending", id);
                }
                for (i, product) in products.iter().enumerate() {
                    let threshold = w.inventory.products[product].low_stock_threshold;
                    let after = w.inventory.products[product].available();
                    let crossed = available_before[i] >= threshold && after < threshold;
                    let notices = follow.iter().filter(|e| matches!(e, DomainEvent::StockLow(s) if s.product_id == *product)).count();
                    prop_assert_eq!(notices, usize::from(crossed), "product {} {} -> {}", i, available_before[i], after);
                }
            }
            // Every hold ends: the sweep asks, once they all ran out.
            w.clock += 10;
            let held: Vec<OrderId> = w.inventory.orders.iter().filter(|(_, o)| o.status == OrderStatus::Held).map(|(id, _)| *id).collect();
            for order_id in held {
                let until = w.inventory.orders[&order_id].hold_until.unwrap();
                let decided = w.step(DomainEvent::OrderExpireRequested(events::OrderExpireRequested {
                    order_id,
                    hold_until: DateTime::from_timestamp_millis(until).unwrap(),
                    epoch: 9,
                }));
                // (Its stock may go on to orders waiting for it.)
                prop_assert_eq!(types(&decided[..1]), ["order.expired"]);
                prop_assert!(decided[1..].iter().all(|e| matches!(e, DomainEvent::OrderBackorderFilled(_))));
            }
            prop_assert!(w.inventory.orders.values().all(|o| o.status != OrderStatus::Held), "a hold never ended");
            let violations = w.inventory.invariant_violations();
            prop_assert!(violations.is_empty(), "after the holds ended: {:?}", violations);
            prop_assert_eq!(w.replayed(), w.inventory.clone());
        }
    }
}

/// `event`, naming `location` (None: the default) wherever it can.
pub(super) fn located(mut event: DomainEvent, location: Option<LocationId>) -> DomainEvent {
    match &mut event {
        DomainEvent::StockReceived(e) => e.location_id = location,
        DomainEvent::StockAdjustmentRequested(e) => e.location_id = location,
        DomainEvent::StockCounted(e) => e.location_id = location,
        DomainEvent::OrderReturnRequested(e) => e.location_id = location,
        DomainEvent::OrderShipmentRequested(e) => {
            for line in &mut e.lines {
                line.location_id = location;
            }
        }
        _ => {}
    }
    event
}
