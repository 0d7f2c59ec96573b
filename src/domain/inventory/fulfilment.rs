//! Shipments and returns: an order's units leave the shelf a few lines at
//! a time, and shipped units may come back. The worker decides a request
//! by allocating it to the order's lines (in line order, for a product the
//! order lists twice) and records the allocation in the decision, so apply
//! and `rebuild` never allocate again.

use super::decide::refusal;
use super::locations::draw;
use super::{Cause, Inventory, LineState, MovementKind, OrderState, OrderStatus, Refused};
use crate::domain::events::{
    LineQuantity, OrderReturnRefused, OrderReturnRequested, OrderReturned, OrderShipmentRefused,
    OrderShipmentRequested, OrderShipped, ReturnedLine,
};
use crate::domain::status::ReturnDisposition;
use crate::domain::{DomainEvent, Envelope, LocationId, Money, OrderId, ProductId, ShipmentId};
use std::collections::BTreeMap;
use uuid::Uuid;

impl Inventory {
    /// A shipment: each line's units leave the shelf and their
    /// reservation. `lines: None` (a v1 event) ships every unshipped unit.
    pub(super) fn ship(&mut self, e: &OrderShipped, at: i64, cause: &Cause) -> Result<(), Refused> {
        let order = self.open_order(e.order_id, "ship")?;
        let lines = match &e.lines {
            Some(lines) => lines.clone(),
            None => everything_unshipped(&order.lines),
        };
        // Where each line's units leave from: as recorded, or (an event
        // of v2 or v1) drawn from the product's allocations in order.
        let mut pools = Pools::default();
        let mut located = Vec::with_capacity(lines.len());
        for line in &lines {
            located.extend(pools.locate(order, line, line.location_id)?);
        }
        let mut after = order.lines.clone();
        for line in &lines {
            let target = line_of(&mut after, e.order_id, line.line_no, line.product_id)?;
            if line.quantity <= 0 || line.quantity > target.unshipped() {
                return Err(Refused(format!(
                    "order {} line {} has {} unshipped; it cannot ship {}",
                    e.order_id,
                    line.line_no,
                    target.unshipped(),
                    line.quantity
                )));
            }
            target.shipped += line.quantity;
        }
        let complete = after.iter().all(|l| l.unshipped() == 0);
        if complete != e.complete {
            return Err(Refused(format!(
                "order.shipped of {} says complete = {}, but its lines say {complete}",
                e.order_id, e.complete
            )));
        }
        for line in &located {
            let location = line.location_id.expect("located above");
            self.product_mut(line.product_id)?.shipped_total += line.quantity;
            self.move_stock(
                line.product_id,
                location,
                MovementKind::Shipped,
                (-line.quantity, -line.quantity),
                at,
                cause,
            )?;
        }
        let order = self.orders.get_mut(&e.order_id).expect("checked above");
        for line in &located {
            let allocation = order
                .allocations
                .iter_mut()
                .find(|a| {
                    a.product_id == line.product_id
                        && Some(a.location_id) == line.location_id
                        && a.unshipped() >= line.quantity
                })
                .expect("located in an allocation above");
            allocation.shipped += line.quantity;
        }
        order.lines = after;
        order.status = if complete {
            OrderStatus::Shipped
        } else {
            OrderStatus::PartiallyShipped
        };
        order.updated_at = at;
        order.cancel_requested = false;
        Ok(())
    }

    /// A return: each line's units count as returned; restocked ones go
    /// back on the shelf (a ledger row `returned`), damaged ones do not.
    pub(super) fn take_back(
        &mut self,
        e: &OrderReturned,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let order = self.orders.get(&e.order_id).ok_or_else(|| {
            Refused(format!(
                "order {} is unknown; nothing to return",
                e.order_id
            ))
        })?;
        if !OrderStatus::RETURNABLE.contains(&order.status) {
            return Err(Refused(format!(
                "order {} is {}; it has shipped nothing to return",
                e.order_id, order.status
            )));
        }
        let mut after = order.lines.clone();
        let mut refund = Money::ZERO;
        for line in &e.lines {
            let target = line_of(&mut after, e.order_id, line.line_no, line.product_id)?;
            if line.quantity <= 0 || line.quantity > target.returnable() {
                return Err(Refused(format!(
                    "order {} line {} has {} shipped and not returned; it cannot take back {}",
                    e.order_id,
                    line.line_no,
                    target.returnable(),
                    line.quantity
                )));
            }
            target.returned += line.quantity;
            refund = refund.plus(target.unit_price.times(line.quantity));
        }
        if refund != e.refund {
            return Err(Refused(format!(
                "order.returned of {} refunds {}, but its lines are worth {refund}",
                e.order_id, e.refund
            )));
        }
        let location = e.location_id.unwrap_or(LocationId::DEFAULT);
        for line in e
            .lines
            .iter()
            .filter(|l| l.disposition == ReturnDisposition::Restock)
        {
            self.product_mut(line.product_id)?.restocked_total += line.quantity;
            self.move_stock(
                line.product_id,
                location,
                MovementKind::Returned,
                (line.quantity, 0),
                at,
                cause,
            )?;
        }
        let order = self.orders.get_mut(&e.order_id).expect("checked above");
        order.lines = after;
        order.updated_at = at;
        Ok(())
    }

    /// A product as a message names it: its SKU, else its id.
    fn product_name(&self, id: ProductId) -> String {
        match self.products.get(&id).and_then(|p| p.sku.as_deref()) {
            Some(sku) => format!("{sku} ({id})"),
            None => format!("product {id}"),
        }
    }

    fn open_order(&self, order_id: OrderId, verb: &str) -> Result<&super::OrderState, Refused> {
        let order = self
            .orders
            .get(&order_id)
            .ok_or_else(|| Refused(format!("order {order_id} is unknown; it cannot {verb}")))?;
        if !order.status.may_ship() {
            return Err(Refused(format!(
                "order {order_id} is {}; only a CONFIRMED or PARTIALLY_SHIPPED order can {verb}",
                order.status
            )));
        }
        Ok(order)
    }

    /// A ship-everything command (`POST .../ship`): every unshipped unit.
    /// Each line leaves from where its product is allocated, in order.
    pub(super) fn decide_ship_all(&self, cause: &Envelope, order_id: OrderId) -> DomainEvent {
        let order = &self.orders[&order_id];
        let mut pools = Pools::default();
        let lines = everything_unshipped(&order.lines)
            .iter()
            .flat_map(|line| {
                pools
                    .locate(order, line, None)
                    .expect("an open order's allocations hold its unshipped units")
            })
            .collect();
        DomainEvent::OrderShipped(OrderShipped {
            order_id,
            shipment_id: Some(ShipmentId(Uuid::new_v5(&cause.event_id, b"shipment"))),
            lines: Some(lines),
            complete: true,
        })
    }

    /// A shipment request: allocated to the order's unshipped units, or
    /// refused (with an alert) naming what does not fit.
    pub(super) fn decide_shipment(
        &self,
        cause: &Envelope,
        e: &OrderShipmentRequested,
    ) -> Vec<DomainEvent> {
        let allocated = self.open_order(e.order_id, "ship").and_then(|order| {
            // Each request line on what the ones before it left: to the
            // order's lines, then to the locations they are allocated at.
            let mut after = order.lines.clone();
            let mut pools = Pools::default();
            let mut shipped: Vec<LineQuantity> = Vec::new();
            for asked in &e.lines {
                let parts = allocate(
                    &after,
                    [(asked.product_id, asked.quantity)].into_iter(),
                    LineState::unshipped,
                    "unshipped",
                    &|id| self.product_name(id),
                )?;
                for (line_no, quantity) in parts {
                    after[line_no].shipped += quantity;
                    let line = LineQuantity {
                        line_no: line_no as u32,
                        product_id: asked.product_id,
                        quantity,
                        location_id: None,
                    };
                    for part in pools.locate(order, &line, asked.location_id)? {
                        match shipped.iter_mut().find(|s| {
                            (s.line_no, s.location_id) == (part.line_no, part.location_id)
                        }) {
                            Some(same) => same.quantity += part.quantity,
                            None => shipped.push(part),
                        }
                    }
                }
            }
            shipped.sort_by_key(|s| s.line_no);
            Ok((shipped, after.iter().all(|l| l.unshipped() == 0)))
        });
        match allocated {
            Ok((lines, complete)) => {
                vec![DomainEvent::OrderShipped(OrderShipped {
                    order_id: e.order_id,
                    shipment_id: Some(e.shipment_id),
                    lines: Some(lines),
                    complete,
                })]
            }
            Err(Refused(why)) => {
                let message = format!("cannot ship order {}: {why}", e.order_id);
                vec![
                    DomainEvent::OrderShipmentRefused(OrderShipmentRefused {
                        order_id: e.order_id,
                        shipment_id: e.shipment_id,
                        message: message.clone(),
                    }),
                    refusal(cause, e.order_id.as_uuid(), message),
                ]
            }
        }
    }

    /// A return request: allocated to the order's shipped, unreturned
    /// units, or refused (with an alert).
    pub(super) fn decide_return(
        &self,
        cause: &Envelope,
        e: &OrderReturnRequested,
    ) -> Vec<DomainEvent> {
        let allocated = match self.orders.get(&e.order_id) {
            None => Err(Refused(format!("order {} is unknown", e.order_id))),
            Some(order) if !OrderStatus::RETURNABLE.contains(&order.status) => {
                Err(Refused(format!(
                    "order {} is {}; it has shipped nothing",
                    e.order_id, order.status
                )))
            }
            Some(order) => {
                // Each request line allocated on what the ones before it left.
                let mut left = order.lines.clone();
                let mut lines = Vec::new();
                let mut failed = None;
                for asked in &e.lines {
                    match allocate(
                        &left,
                        [(asked.product_id, asked.quantity)].into_iter(),
                        LineState::returnable,
                        "shipped and not returned",
                        &|id| self.product_name(id),
                    ) {
                        Ok(parts) => {
                            for (line_no, quantity) in parts {
                                left[line_no].returned += quantity;
                                lines.push((line_no, quantity, asked.disposition));
                            }
                        }
                        Err(refused) => {
                            failed = Some(refused);
                            break;
                        }
                    }
                }
                match failed {
                    Some(refused) => Err(refused),
                    None => Ok((order, lines)),
                }
            }
        };
        match allocated {
            Ok((order, lines)) => {
                let refund = lines
                    .iter()
                    .fold(Money::ZERO, |sum, (line_no, quantity, _)| {
                        sum.plus(order.lines[*line_no].unit_price.times(*quantity))
                    });
                vec![DomainEvent::OrderReturned(OrderReturned {
                    order_id: e.order_id,
                    return_id: e.return_id,
                    lines: lines
                        .into_iter()
                        .map(|(line_no, quantity, disposition)| ReturnedLine {
                            line_no: line_no as u32,
                            product_id: order.lines[line_no].product_id,
                            quantity,
                            disposition,
                        })
                        .collect(),
                    reason: e.reason.clone(),
                    refund,
                    location_id: e.location_id,
                })]
            }
            Err(Refused(why)) => {
                let message = format!("cannot take back a return of order {}: {why}", e.order_id);
                vec![
                    DomainEvent::OrderReturnRefused(OrderReturnRefused {
                        order_id: e.order_id,
                        return_id: e.return_id,
                        message: message.clone(),
                    }),
                    refusal(cause, e.order_id.as_uuid(), message),
                ]
            }
        }
    }
}

/// Every unshipped unit, line by line.
fn everything_unshipped(lines: &[LineState]) -> Vec<LineQuantity> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.unshipped() > 0)
        .map(|(line_no, line)| LineQuantity {
            line_no: line_no as u32,
            product_id: line.product_id,
            quantity: line.unshipped(),
            location_id: None,
        })
        .collect()
}

/// An order's unshipped units per product and location, as a shipment
/// draws on them line by line.
#[derive(Default)]
struct Pools(BTreeMap<ProductId, Vec<(LocationId, i64)>>);

impl Pools {
    /// Where `line`'s units leave from: at `named` only, or drawn from the
    /// product's allocations in the order they were made. One entry per
    /// location, each with its `location_id` set.
    fn locate(
        &mut self,
        order: &OrderState,
        line: &LineQuantity,
        named: Option<LocationId>,
    ) -> Result<Vec<LineQuantity>, Refused> {
        let pool = self
            .0
            .entry(line.product_id)
            .or_insert_with(|| order.unshipped_at(line.product_id));
        let taken = match named {
            Some(location) => {
                let held = pool.iter_mut().find(|(l, _)| *l == location);
                match held {
                    Some((_, units)) if *units >= line.quantity => {
                        *units -= line.quantity;
                        Some(vec![(location, line.quantity)])
                    }
                    held => {
                        return Err(Refused(format!(
                            "{} of {} asked from location {location}, where the order holds {} unshipped",
                            line.quantity,
                            line.product_id,
                            held.map_or(0, |(_, units)| *units)
                        )))
                    }
                }
            }
            None => draw(pool, line.quantity),
        };
        let taken = taken.ok_or_else(|| {
            Refused(format!(
                "the order's allocations of {} hold less than {} unshipped",
                line.product_id, line.quantity
            ))
        })?;
        Ok(taken
            .into_iter()
            .map(|(location, quantity)| LineQuantity {
                location_id: Some(location),
                quantity,
                ..line.clone()
            })
            .collect())
    }
}

/// The order line `line_no`, which must be of `product_id`.
fn line_of(
    lines: &mut [LineState],
    order_id: OrderId,
    line_no: u32,
    product_id: ProductId,
) -> Result<&mut LineState, Refused> {
    match lines.get_mut(line_no as usize) {
        Some(line) if line.product_id == product_id => Ok(line),
        Some(line) => Err(Refused(format!(
            "order {order_id} line {line_no} is of product {}, not {product_id}",
            line.product_id
        ))),
        None => Err(Refused(format!("order {order_id} has no line {line_no}"))),
    }
}

/// Allocates quantities asked per product to the lines of that product,
/// in line order, up to what `room` says each line has (unshipped units,
/// say). Refused when a product is not in the order or the lines have too
/// little room; `what` names the room in the message.
fn allocate(
    lines: &[LineState],
    asked: impl Iterator<Item = (ProductId, i64)>,
    room: fn(&LineState) -> i64,
    what: &str,
    name: &dyn Fn(ProductId) -> String,
) -> Result<Vec<(usize, i64)>, Refused> {
    let mut used = vec![0i64; lines.len()];
    let mut allocated = Vec::new();
    for (product_id, quantity) in asked {
        if quantity <= 0 {
            return Err(Refused(format!(
                "the quantity of {} is {quantity}; it must be positive",
                name(product_id)
            )));
        }
        let of_product: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].product_id == product_id)
            .collect();
        if of_product.is_empty() {
            return Err(Refused(format!("{} is not in the order", name(product_id))));
        }
        let available: i64 = of_product.iter().map(|&i| room(&lines[i]) - used[i]).sum();
        if quantity > available {
            return Err(Refused(format!(
                "{quantity} of {} asked, but the order has {available} {what}",
                name(product_id)
            )));
        }
        let mut left = quantity;
        for i in of_product {
            let take = left.min(room(&lines[i]) - used[i]);
            if take > 0 {
                used[i] += take;
                left -= take;
                allocated.push((i, take));
            }
        }
    }
    // One entry per line, in line order (a product asked twice merges).
    let mut merged: std::collections::BTreeMap<usize, i64> = Default::default();
    for (line_no, quantity) in allocated {
        *merged.entry(line_no).or_default() += quantity;
    }
    Ok(merged.into_iter().collect())
}
