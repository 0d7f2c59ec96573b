//! Transfers between locations, in two phases as in Shopify and Spree: a
//! request the worker ships at once (the origin's on-hand drops, the
//! units are in transit to the destination) or refuses, then a receipt at
//! the destination (the units go on its shelf; a shortfall is adjusted
//! away as `transit_loss`). Per product, on-hand plus in-transit over all
//! locations is what transfers conserve.

use super::decide::refusal;
use super::{Cause, Inventory, MovementKind, Refused};
use crate::domain::events::{
    ReceivedLine, StockAdjusted, TransferReceiveRequested, TransferReceived, TransferRefused,
    TransferRequested, TransferShipped,
};
use crate::domain::status::{AdjustmentReason, TransferStatus};
use crate::domain::{AdjustmentId, DomainEvent, Envelope, LocationId, ProductId, TransferId};
use uuid::Uuid;

/// One product of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLine {
    pub product_id: ProductId,
    pub quantity: i64,
    /// Set once it arrived.
    pub received: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferState {
    pub from: LocationId,
    pub to: LocationId,
    pub lines: Vec<TransferLine>,
    pub status: TransferStatus,
    /// Why it was refused.
    pub message: Option<String>,
    pub discrepancy_reason: Option<String>,
    /// Event times (Unix milliseconds).
    pub requested_at: i64,
    pub shipped_at: Option<i64>,
    pub received_at: Option<i64>,
}

impl Inventory {
    pub(super) fn request_transfer(&mut self, e: &TransferRequested, at: i64) {
        // A second request under the same id changes nothing.
        self.transfers
            .entry(e.transfer_id)
            .or_insert_with(|| TransferState {
                from: e.from,
                to: e.to,
                lines: e
                    .lines
                    .iter()
                    .map(|l| TransferLine {
                        product_id: l.product_id,
                        quantity: l.quantity,
                        received: None,
                    })
                    .collect(),
                status: TransferStatus::Requested,
                message: None,
                discrepancy_reason: None,
                requested_at: at,
                shipped_at: None,
                received_at: None,
            });
    }

    /// The units leave the origin's shelf and are in transit.
    pub(super) fn ship_transfer(
        &mut self,
        e: &TransferShipped,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let transfer = self.transfer_in(e.transfer_id, TransferStatus::Requested, "ship")?;
        let (from, to, lines) = (transfer.from, transfer.to, transfer.lines.clone());
        for line in &lines {
            let stock = self.stock_at(line.product_id, from);
            if stock.available() < line.quantity {
                return Err(Refused(format!(
                    "transfer {} ships {} of {} from {from}, which has {} available",
                    e.transfer_id,
                    line.quantity,
                    line.product_id,
                    stock.available()
                )));
            }
        }
        for line in &lines {
            self.move_stock(
                line.product_id,
                from,
                MovementKind::TransferOut,
                (-line.quantity, 0),
                at,
                cause,
            )?;
            let product = self.product_mut(line.product_id)?;
            product.locations.entry(to).or_default().in_transit += line.quantity;
            product.in_transit += line.quantity;
        }
        let transfer = self.transfers.get_mut(&e.transfer_id).expect("checked");
        transfer.status = TransferStatus::Shipped;
        transfer.shipped_at = Some(at);
        Ok(())
    }

    pub(super) fn refuse_transfer(&mut self, e: &TransferRefused) -> Result<(), Refused> {
        self.transfer_in(e.transfer_id, TransferStatus::Requested, "be refused")?;
        let transfer = self.transfers.get_mut(&e.transfer_id).expect("checked");
        transfer.status = TransferStatus::Refused;
        transfer.message = Some(e.message.clone());
        Ok(())
    }

    /// Every unit shipped leaves transit and goes on the destination's
    /// shelf; what did not arrive is adjusted away by the `transit_loss`
    /// adjustment the worker records after this.
    pub(super) fn receive_transfer(
        &mut self,
        e: &TransferReceived,
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let transfer = self.transfer_in(e.transfer_id, TransferStatus::Shipped, "be received")?;
        let to = transfer.to;
        let mut lines = transfer.lines.clone();
        for got in &e.lines {
            let line = lines
                .iter_mut()
                .find(|l| l.product_id == got.product_id)
                .ok_or_else(|| {
                    Refused(format!(
                        "transfer {} has no line of {}",
                        e.transfer_id, got.product_id
                    ))
                })?;
            if !(0..=line.quantity).contains(&got.received) {
                return Err(Refused(format!(
                    "transfer {} shipped {} of {}; {} cannot have arrived",
                    e.transfer_id, line.quantity, got.product_id, got.received
                )));
            }
            line.received = Some(got.received);
        }
        for line in &mut lines {
            line.received.get_or_insert(line.quantity);
            let product = self.product_mut(line.product_id)?;
            product.locations.entry(to).or_default().in_transit -= line.quantity;
            product.in_transit -= line.quantity;
            self.move_stock(
                line.product_id,
                to,
                MovementKind::TransferIn,
                (line.quantity, 0),
                at,
                cause,
            )?;
        }
        let transfer = self.transfers.get_mut(&e.transfer_id).expect("checked");
        transfer.lines = lines;
        transfer.status = TransferStatus::Received;
        transfer.discrepancy_reason = e.discrepancy_reason.clone();
        transfer.received_at = Some(at);
        Ok(())
    }

    fn transfer_in(
        &self,
        id: TransferId,
        status: TransferStatus,
        verb: &str,
    ) -> Result<&super::TransferState, Refused> {
        let transfer = self
            .transfers
            .get(&id)
            .ok_or_else(|| Refused(format!("transfer {id} is unknown; it cannot {verb}")))?;
        if transfer.status != status {
            return Err(Refused(format!(
                "transfer {id} is {}; only a {} one can {verb}",
                transfer.status, status
            )));
        }
        Ok(transfer)
    }

    /// A request: shipped if the origin has every line available, all or
    /// nothing, else refused with the first line that falls short.
    pub(super) fn decide_transfer(
        &self,
        cause: &Envelope,
        e: &TransferRequested,
    ) -> Vec<DomainEvent> {
        let Some(transfer) = self.transfers.get(&e.transfer_id) else {
            return Vec::new();
        };
        if transfer.status != TransferStatus::Requested {
            return Vec::new(); // a repeated request of a decided transfer
        }
        let short = transfer.lines.iter().find_map(|line| {
            let sku = self
                .products
                .get(&line.product_id)
                .and_then(|p| p.sku.clone());
            let Some(sku) = sku else {
                return Some(format!("product {} is unknown", line.product_id));
            };
            let available = self.stock_at(line.product_id, transfer.from).available();
            (available < line.quantity).then(|| {
                format!(
                    "{} of {sku} asked, but {} has {available} available",
                    line.quantity,
                    self.location_name(transfer.from)
                )
            })
        });
        let twice = transfer.lines.iter().enumerate().find_map(|(i, line)| {
            transfer.lines[..i]
                .iter()
                .any(|l| l.product_id == line.product_id)
                .then(|| format!("{} is listed more than once", line.product_id))
        });
        let same =
            (transfer.from == transfer.to).then(|| "from and to are the same location".to_string());
        let short = same.or(twice).or(short);
        match short {
            None => vec![DomainEvent::TransferShipped(TransferShipped {
                transfer_id: e.transfer_id,
            })],
            Some(why) => {
                let message = format!("cannot ship transfer {}: {why}", e.transfer_id);
                vec![
                    DomainEvent::TransferRefused(TransferRefused {
                        transfer_id: e.transfer_id,
                        message: message.clone(),
                    }),
                    refusal(cause, e.transfer_id.as_uuid(), message),
                ]
            }
        }
    }

    /// A receipt: recorded, with a `transit_loss` adjustment per product
    /// short; or refused (with an alert) when the transfer is not in
    /// transit or the lines do not fit it.
    pub(super) fn decide_transfer_receipt(
        &self,
        cause: &Envelope,
        e: &TransferReceiveRequested,
    ) -> Vec<DomainEvent> {
        let checked = self
            .transfer_in(e.transfer_id, TransferStatus::Shipped, "be received")
            .and_then(|transfer| {
                let mut lines = Vec::with_capacity(transfer.lines.len());
                for line in &transfer.lines {
                    let listed: Vec<&ReceivedLine> = e
                        .lines
                        .iter()
                        .filter(|l| l.product_id == line.product_id)
                        .collect();
                    let received = match listed.as_slice() {
                        [] => line.quantity,
                        [one] if (0..=line.quantity).contains(&one.received) => one.received,
                        [one] => {
                            return Err(Refused(format!(
                                "{} of {} shipped; {} cannot have arrived",
                                line.quantity, line.product_id, one.received
                            )))
                        }
                        _ => {
                            return Err(Refused(format!(
                                "{} is listed more than once",
                                line.product_id
                            )))
                        }
                    };
                    lines.push((line.product_id, line.quantity, received));
                }
                if let Some(stranger) = e
                    .lines
                    .iter()
                    .find(|l| !transfer.lines.iter().any(|t| t.product_id == l.product_id))
                {
                    return Err(Refused(format!(
                        "{} is not in the transfer",
                        stranger.product_id
                    )));
                }
                Ok((transfer.to, lines))
            });
        match checked {
            Ok((to, lines)) => {
                let mut decisions = vec![DomainEvent::TransferReceived(TransferReceived {
                    transfer_id: e.transfer_id,
                    lines: lines
                        .iter()
                        .map(|&(product_id, _, received)| ReceivedLine {
                            product_id,
                            received,
                        })
                        .collect(),
                    discrepancy_reason: e.discrepancy_reason.clone(),
                })];
                for (product_id, shipped, received) in lines {
                    if received < shipped {
                        decisions.push(DomainEvent::StockAdjusted(StockAdjusted {
                            location_id: Some(to),
                            adjustment_id: AdjustmentId(Uuid::new_v5(
                                &cause.event_id,
                                format!("transit-loss/{product_id}").as_bytes(),
                            )),
                            product_id,
                            delta: received - shipped,
                            reason: AdjustmentReason::TransitLoss,
                            reference: Some(format!("transfer {}", e.transfer_id)),
                            note: e.discrepancy_reason.clone(),
                            counted: None,
                        }));
                    }
                }
                decisions
            }
            Err(Refused(why)) => vec![refusal(
                cause,
                e.transfer_id.as_uuid(),
                format!("cannot receive transfer {}: {why}", e.transfer_id),
            )],
        }
    }

    /// A location as a message names it: its code, else its id.
    fn location_name(&self, id: LocationId) -> String {
        match self.locations.get(&id) {
            Some(location) => location.code.clone(),
            None => format!("location {id}"),
        }
    }
}
