//! Shipments and returns: an order's units leave the shelf a few lines at
//! a time, and shipped units may come back. The worker decides a request
//! by allocating it to the order's lines (in line order, for a product the
//! order lists twice) and records the allocation in the decision, so apply
//! and `rebuild` never allocate again.

use super::decide::refusal;
use super::{Cause, Inventory, LineState, MovementKind, OrderStatus, Refused};
use crate::domain::events::{
    LineQuantity, OrderReturnRefused, OrderReturnRequested, OrderReturned, OrderShipmentRefused,
    OrderShipmentRequested, OrderShipped, ReturnedLine,
};
use crate::domain::status::ReturnDisposition;
use crate::domain::{DomainEvent, Envelope, Money, OrderId, ProductId, ShipmentId};
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
        for line in &lines {
            let product = self.product_mut(line.product_id)?;
            product.on_hand -= line.quantity;
            product.reserved -= line.quantity;
            product.shipped_total += line.quantity;
            product.updated_at = product.updated_at.max(at);
            self.record(
                line.product_id,
                MovementKind::Shipped,
                (-line.quantity, -line.quantity),
                at,
                cause,
            );
        }
        let order = self.orders.get_mut(&e.order_id).expect("checked above");
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
        for line in e
            .lines
            .iter()
            .filter(|l| l.disposition == ReturnDisposition::Restock)
        {
            let product = self.product_mut(line.product_id)?;
            product.on_hand += line.quantity;
            product.restocked_total += line.quantity;
            product.updated_at = product.updated_at.max(at);
            self.record(
                line.product_id,
                MovementKind::Returned,
                (line.quantity, 0),
                at,
                cause,
            );
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
        if !order.status.is_open() {
            return Err(Refused(format!(
                "order {order_id} is {}; only a CONFIRMED or PARTIALLY_SHIPPED order can {verb}",
                order.status
            )));
        }
        Ok(order)
    }

    /// A ship-everything command (`POST .../ship`): every unshipped unit.
    pub(super) fn decide_ship_all(&self, cause: &Envelope, order_id: OrderId) -> DomainEvent {
        let lines = everything_unshipped(&self.orders[&order_id].lines);
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
            let asked = e.lines.iter().map(|l| (l.product_id, l.quantity));
            allocate(
                &order.lines,
                asked,
                LineState::unshipped,
                "unshipped",
                &|id| self.product_name(id),
            )
        });
        match allocated {
            Ok(lines) => {
                let order = &self.orders[&e.order_id];
                let mut after = order.lines.clone();
                for (line_no, quantity) in &lines {
                    after[*line_no].shipped += quantity;
                }
                vec![DomainEvent::OrderShipped(OrderShipped {
                    order_id: e.order_id,
                    shipment_id: Some(e.shipment_id),
                    lines: Some(
                        lines
                            .into_iter()
                            .map(|(line_no, quantity)| LineQuantity {
                                line_no: line_no as u32,
                                product_id: order.lines[line_no].product_id,
                                quantity,
                            })
                            .collect(),
                    ),
                    complete: after.iter().all(|l| l.unshipped() == 0),
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
        })
        .collect()
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
