//! Stock in several locations: each product's stock is kept per location,
//! its totals are the sums, and an order's lines are reserved where the
//! worker's allocation put them.
//!
//! The allocation is a decision: made once, at confirmation, by the
//! strategy in force, and recorded in `order.confirmed`. Apply reads it
//! and never allocates, so changing the strategy never changes a
//! `rebuild`. Shipments and cancels act on the recorded allocations: a
//! line draws from its product's allocations in the order they were made
//! (the strategy's order), unless a shipment names the location.

use super::{Cause, Inventory, LineState, MovementKind, OrderState, Refused};
use crate::domain::events::{Allocation, LocationCreated, LocationUpdated};
use crate::domain::status::AllocationStrategy;
use crate::domain::{LocationId, ProductId};
use std::collections::BTreeMap;

/// A place stock is kept in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationState {
    pub code: String,
    pub name: String,
    /// Lower first, for the `priority` strategy.
    pub priority: i64,
    /// Inactive: its stock stays visible, but no order is allocated from it.
    pub active: bool,
}

impl LocationState {
    /// The location every deployment has (`LocationId::DEFAULT`).
    pub fn default_location() -> LocationState {
        LocationState {
            code: "default".into(),
            name: "Default location".into(),
            priority: 0,
            active: true,
        }
    }
}

/// One product's stock at one location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocationStock {
    pub on_hand: i64,
    pub reserved: i64,
    /// Units shipped to this location by a transfer, not received yet.
    pub in_transit: i64,
}

impl LocationStock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Units of a product an order holds at one location, and how many of
/// them have shipped. While the order is open, `quantity - shipped` is
/// reserved there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationState {
    pub product_id: ProductId,
    pub location_id: LocationId,
    pub quantity: i64,
    pub shipped: i64,
}

impl AllocationState {
    pub fn unshipped(&self) -> i64 {
        self.quantity - self.shipped
    }
}

impl OrderState {
    /// The units of `product` the order holds at each location, in the
    /// order they were allocated (unshipped ones, whatever the status).
    pub fn unshipped_at(&self, product: ProductId) -> Vec<(LocationId, i64)> {
        self.allocations
            .iter()
            .filter(|a| a.product_id == product && a.unshipped() > 0)
            .map(|a| (a.location_id, a.unshipped()))
            .collect()
    }
}

/// Takes `quantity` from `pool` (location, units) in order; returns what
/// came from where. None when the pool holds less.
pub(super) fn draw(
    pool: &mut [(LocationId, i64)],
    quantity: i64,
) -> Option<Vec<(LocationId, i64)>> {
    let mut taken = Vec::new();
    let mut left = quantity;
    for (location, units) in pool.iter_mut() {
        if left == 0 {
            break;
        }
        let take = left.min(*units);
        if take > 0 {
            *units -= take;
            left -= take;
            taken.push((*location, take));
        }
    }
    (left == 0).then_some(taken)
}

/// Why an order cannot be allocated: the first product (by id) that the
/// active locations together cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub product_id: ProductId,
    pub requested: i64,
    /// Available at the active locations together.
    pub available: i64,
}

impl Inventory {
    /// The allocation of `wanted` (units per product) over the active
    /// locations by `strategy`, all or nothing. Each product's units fill
    /// the first location in the strategy's order and go on to the next
    /// only for what it lacks: a line is split when that location cannot
    /// hold it whole, and confirmed whenever the active locations together
    /// can.
    pub fn allocate(
        &self,
        wanted: &BTreeMap<ProductId, i64>,
        strategy: AllocationStrategy,
    ) -> Result<Vec<Allocation>, Shortfall> {
        let mut allocations = Vec::new();
        for (&product_id, &requested) in wanted {
            let mut shelves: Vec<(&LocationState, LocationId, i64)> = self
                .products
                .get(&product_id)
                .map(|p| {
                    p.locations
                        .iter()
                        .filter_map(|(&id, stock)| {
                            let location = self.locations.get(&id)?;
                            (location.active && stock.available() > 0).then_some((
                                location,
                                id,
                                stock.available(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            match strategy {
                AllocationStrategy::Priority => shelves
                    .sort_by(|a, b| (a.0.priority, &a.0.code).cmp(&(b.0.priority, &b.0.code))),
                AllocationStrategy::MostStock => shelves.sort_by(|a, b| {
                    (b.2, a.0.priority, &a.0.code).cmp(&(a.2, b.0.priority, &b.0.code))
                }),
            }
            let mut pool: Vec<(LocationId, i64)> =
                shelves.iter().map(|&(_, id, units)| (id, units)).collect();
            let Some(taken) = draw(&mut pool, requested) else {
                return Err(Shortfall {
                    product_id,
                    requested,
                    available: shelves.iter().map(|s| s.2).sum(),
                });
            };
            allocations.extend(taken.into_iter().map(|(location_id, quantity)| Allocation {
                product_id,
                location_id,
                quantity,
            }));
        }
        Ok(allocations)
    }

    /// Where a new purchase order is to be received: the first active
    /// location by priority, then code (the batch that drafts one loads
    /// every location); None when it is the default one.
    pub fn receiving_location(&self) -> Option<LocationId> {
        self.locations
            .iter()
            .filter(|(_, l)| l.active)
            .min_by(|a, b| (a.1.priority, &a.1.code).cmp(&(b.1.priority, &b.1.code)))
            .map(|(&id, _)| id)
            .filter(|&id| id != LocationId::DEFAULT)
    }

    /// Moves a product's stock at one location (and so its totals), and
    /// records the movement in the ledger.
    pub(super) fn move_stock(
        &mut self,
        product_id: ProductId,
        location_id: LocationId,
        kind: MovementKind,
        (on_hand_delta, reserved_delta): (i64, i64),
        at: i64,
        cause: &Cause,
    ) -> Result<(), Refused> {
        let product = self.product_mut(product_id)?;
        let stock = product.locations.entry(location_id).or_default();
        stock.on_hand += on_hand_delta;
        stock.reserved += reserved_delta;
        product.on_hand += on_hand_delta;
        product.reserved += reserved_delta;
        product.updated_at = product.updated_at.max(at);
        self.record(
            product_id,
            location_id,
            kind,
            (on_hand_delta, reserved_delta),
            at,
            cause,
        );
        Ok(())
    }

    /// The stock of a product at a location (zero where it has none).
    pub fn stock_at(&self, product_id: ProductId, location_id: LocationId) -> LocationStock {
        self.products
            .get(&product_id)
            .and_then(|p| p.locations.get(&location_id))
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn create_location(&mut self, e: &LocationCreated) -> Result<(), Refused> {
        if self.locations.contains_key(&e.location_id) {
            return Err(Refused(format!(
                "location {} already exists",
                e.location_id
            )));
        }
        if let Some((id, _)) = self.locations.iter().find(|(_, l)| l.code == e.code) {
            return Err(Refused(format!(
                "location code {} is already location {id}'s",
                e.code
            )));
        }
        self.locations.insert(
            e.location_id,
            LocationState {
                code: e.code.clone(),
                name: e.name.clone(),
                priority: e.priority,
                active: e.active,
            },
        );
        Ok(())
    }

    pub(super) fn update_location(&mut self, e: &LocationUpdated) -> Result<(), Refused> {
        let location = self
            .locations
            .get_mut(&e.location_id)
            .ok_or_else(|| Refused(format!("location {} is unknown", e.location_id)))?;
        if let Some(name) = &e.name {
            location.name = name.clone();
        }
        if let Some(priority) = e.priority {
            location.priority = priority;
        }
        if let Some(active) = e.active {
            location.active = active;
        }
        Ok(())
    }

    /// The allocations an order's confirmation records: as decided, or
    /// (an event of v1) every line at the default location, a product's
    /// lines together in the order they first appear.
    pub(super) fn allocations_of(
        lines: &[LineState],
        recorded: Option<&[Allocation]>,
    ) -> Vec<AllocationState> {
        match recorded {
            Some(recorded) => recorded
                .iter()
                .map(|a| AllocationState {
                    product_id: a.product_id,
                    location_id: a.location_id,
                    quantity: a.quantity,
                    shipped: 0,
                })
                .collect(),
            None => {
                let mut allocations: Vec<AllocationState> = Vec::new();
                for line in lines {
                    match allocations
                        .iter_mut()
                        .find(|a| a.product_id == line.product_id)
                    {
                        Some(a) => a.quantity += line.quantity,
                        None => allocations.push(AllocationState {
                            product_id: line.product_id,
                            location_id: LocationId::DEFAULT,
                            quantity: line.quantity,
                            shipped: 0,
                        }),
                    }
                }
                allocations
            }
        }
    }
}
