// Shapes of the dashboard snapshot pushed on /ws/dashboard and of the REST
// answers, taken from the gateway's OpenAPI document: src/api.ts is
// generated from web/openapi.json (`npm run types`), which `streamstock
// openapi` writes, so the page and the server cannot drift
// (tests/openapi.rs checks both files are current). Money is a decimal
// number of the currency unit.

import type { components } from "./api";

type Schemas = components["schemas"];

export type Snapshot = Schemas["Snapshot"];
export type Pipeline = Schemas["Pipeline"];
export type WorkerView = Schemas["WorkerView"];
/** Pushed between snapshots: orders whose status a worker just committed. */
export type StatusChanges = Schemas["StatusChanges"];
export type Stats = Schemas["Stats"];
/** One tumbling window of event time: order events and confirmed revenue. */
export type Window = Schemas["Window"];
export type TopProduct = Schemas["TopProduct"];
export type PurchaseOrderRow = Schemas["PurchaseOrderView"];
export type ProductRow = Schemas["ProductView"];
export type Adjustment = Schemas["AdjustmentView"];
export type AdjustmentReason = Schemas["AdjustmentReason"];
export type LedgerEntry = Schemas["LedgerEntry"];
export type ImportOutcome = Schemas["ImportOutcome"];
export type OrderRow = Schemas["OrderView"];
export type FulfilmentRow = Schemas["FulfilmentView"];
export type FulfilmentQueued = Schemas["FulfilmentQueued"];
export type AlertRow = Schemas["AlertView"];
export type ArchivedEvent = Schemas["ArchivedEvent"];
export type DeadLetter = Schemas["DeadLetter"];
export type LostLogEntries = Schemas["LostLogEntries"];
export type SimulatorState = Schemas["SimulatorState"];
export type LocationRow = Schemas["LocationView"];
export type LocationStock = Schemas["LocationStockView"];
export type StockAtLocation = Schemas["StockAtLocationView"];
export type TransferRow = Schemas["TransferView"];
export type TransferQueued = Schemas["TransferQueued"];
/** A product's backorder queue: the orders waiting for it, next filled first. */
export type BackorderQueue = Schemas["BackorderQueue"];
export type SubscriptionRow = Schemas["SubscriptionView"];
export type SubscriptionCreated = Schemas["SubscriptionCreatedView"];
export type DeliveryAttempt = Schemas["DeliveryAttempt"];
