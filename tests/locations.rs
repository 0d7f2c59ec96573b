//! Stock in several locations over the HTTP API, on each backend pair:
//! locations created (a duplicate code 409, a bad one 422), receipts at a
//! location, the order no single location can hold confirmed split across
//! two (the failure users report of multi-location systems), a shipment
//! drawing from a named location, a deactivated location allocating
//! nothing while its stock stays visible, adjustments and counts at a
//! location, a cancel releasing where the units were held, a transfer
//! shipped and received one short (a transit loss) and one refused, bad input
//! refused with nothing appended, the invariants, and `rebuild` identical.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::domain::status::OrderStatus;
use streamstock::domain::LocationId;
use uuid::Uuid;

async fn location(api: &Api, code: &str, priority: i64) -> Uuid {
    let (status, body) = api
        .post(
            "/api/locations",
            &json!({"code": code, "name": code.to_uppercase(), "priority": priority}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn receive_at(api: &Api, product: Uuid, location: Uuid, quantity: i64) {
    let (status, body) = api
        .post(
            &format!("/api/products/{product}/stock"),
            &json!({"quantity": quantity, "location_id": location}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// The product's (on_hand, reserved) at each location, by code.
async fn per_location(api: &Api, product: Uuid) -> Vec<(String, i64, i64)> {
    let (status, body) = api.get(&format!("/api/products/{product}")).await;
    assert_eq!(status, 200, "{body}");
    body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["on_hand"] != 0 || l["reserved"] != 0)
        .map(|l| {
            (
                l["code"].as_str().unwrap().to_string(),
                l["on_hand"].as_i64().unwrap(),
                l["reserved"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn wait_per_location(api: &Api, product: Uuid, want: &[(&str, i64, i64)]) {
    let want: Vec<(String, i64, i64)> = want
        .iter()
        .map(|(c, h, r)| (c.to_string(), *h, *r))
        .collect();
    api.wait_for(&format!("stock per location {want:?}"), || async {
        per_location(api, product).await == want
    })
    .await;
}

async fn decided(api: &Api, order: Uuid) -> OrderStatus {
    api.status_waiting(order, 10).await.expect("decided")
}

async fn allocations(api: &Api, order: Uuid) -> Vec<(String, i64, i64)> {
    let (_, body) = api.get(&format!("/api/orders/{order}")).await;
    body["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["code"].as_str().unwrap().to_string(),
                a["quantity"].as_i64().unwrap(),
                a["shipped"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn stock_in_several_locations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, listed) = app.get("/api/locations").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["code"], "default", "{listed}");

    let east = location(&app, "east", 1).await;
    let west = location(&app, "west", 2).await;
    let (status, body) = app
        .post("/api/locations", &json!({"code": "east", "name": "again"}))
        .await;
    assert_eq!(status, 409, "{body}");

    let product = app
        .add_product(
            &json!({"sku": "LOC-A", "name": "A", "price": 2.0, "category_name": "tests",
                             "low_stock_threshold": 0, "reorder_quantity": 0}),
        )
        .await
        .expect(201)
        .id
        .as_uuid();
    receive_at(&app, product, east, 3).await;
    receive_at(&app, product, west, 4).await;
    wait_per_location(&app, product, &[("east", 3, 0), ("west", 4, 0)]).await;

    // Six units: no location holds them, the two together do.
    let order = app
        .order_of("loc@example.com", &[(product, 6)])
        .await
        .expect(202)
        .order_id
        .as_uuid();
    assert_eq!(decided(&app, order).await, OrderStatus::Confirmed);
    assert_eq!(
        allocations(&app, order).await,
        vec![("east".into(), 3, 0), ("west".into(), 3, 0)]
    );
    wait_per_location(&app, product, &[("east", 3, 3), ("west", 4, 3)]).await;

    // A shipment from west only.
    let (status, queued) = app
        .post(
            &format!("/api/orders/{order}/shipments"),
            &json!({"lines": [{"product_id": product, "quantity": 2, "location_id": west}]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let shipment = queued["id"].as_str().unwrap();
    let (status, read) = app
        .get(&format!("/api/orders/{order}/shipments/{shipment}?wait=10"))
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["allocated"][0]["location_id"], json!(west));
    wait_per_location(&app, product, &[("east", 3, 3), ("west", 2, 1)]).await;

    // West deactivated: its stock stays visible, no order takes from it.
    let answer = app
        .send(
            app.http
                .patch(app.url(&format!("/api/locations/{west}")))
                .json(&json!({"active": false})),
        )
        .await;
    let (status, body) = (answer.status, answer.body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    let starved = app
        .order_of("loc@example.com", &[(product, 1)])
        .await
        .expect(202)
        .order_id
        .as_uuid();
    assert_eq!(decided(&app, starved).await, OrderStatus::Rejected);
    wait_per_location(&app, product, &[("east", 3, 3), ("west", 2, 1)]).await;

    // An adjustment at east below what the order holds there is refused;
    // a count at west finds one more.
    let (status, body) = app
        .post(
            &format!("/api/products/{product}/adjustments"),
            &json!({"delta": -1, "reason": "damaged", "location_id": east}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let adjustment = body["adjustment_id"].as_str().unwrap();
    let (status, read) = app
        .get(&format!(
            "/api/products/{product}/adjustments/{adjustment}?wait=10"
        ))
        .await;
    assert_eq!(status, 409, "{read}");
    assert_eq!(read["refusal"]["held_by"], json!([order]));
    assert_eq!(read["location_id"], json!(east));
    let (status, body) = app
        .post(
            &format!("/api/products/{product}/counts"),
            &json!({"counted": 3, "location_id": west}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_per_location(&app, product, &[("east", 3, 3), ("west", 3, 1)]).await;

    // The cancel releases where the units were held.
    app.cancel(order).await.expect(202);
    wait_per_location(&app, product, &[("east", 3, 0), ("west", 3, 0)]).await;

    let (status, listed) = app.get("/api/locations").await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["default", "east", "west"]);
    assert_eq!(listed[2]["on_hand"], 3);
    assert_eq!(listed[2]["active"], false);
    let (status, at_west) = app.get(&format!("/api/locations/{west}/stock")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &at_west[0]["sku"],
            &at_west[0]["on_hand"],
            at_west.as_array().unwrap().len()
        ),
        (&json!("LOC-A"), &json!(3), 1),
        "{at_west}"
    );

    // The ledger names the location of each movement.
    let (_, ledger) = app.get(&format!("/api/products/{product}/ledger")).await;
    let at_west = ledger
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["location_id"] == json!(west))
        .count();
    assert!(at_west >= 4, "{ledger}");

    // A transfer: two of east's three go to the default location; they
    // are in transit until received, one short.
    let default = LocationId::DEFAULT;
    let (status, queued) = app
        .post(
            "/api/transfers",
            &json!({"from": east, "to": default, "lines": [{"product_id": product, "quantity": 2}]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let transfer = queued["id"].as_str().unwrap().to_string();
    let (status, read) = app.get(&format!("/api/transfers/{transfer}?wait=10")).await;
    assert_eq!(
        (status, &read["status"]),
        (200, &json!("shipped")),
        "{read}"
    );
    wait_per_location(&app, product, &[("east", 1, 0), ("west", 3, 0)]).await;
    let (_, body) = app.get(&format!("/api/products/{product}")).await;
    let in_transit: Vec<(String, i64)> = body["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["code"].as_str().unwrap().to_string(),
                l["in_transit"].as_i64().unwrap(),
            )
        })
        .filter(|(_, t)| *t != 0)
        .collect();
    assert_eq!(in_transit, vec![("default".to_string(), 2)]);
    let (status, body) = app
        .post(
            &format!("/api/transfers/{transfer}/receive"),
            &json!({"lines": [{"product_id": product, "received": 1}], "discrepancy_reason": "crushed"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    wait_per_location(
        &app,
        product,
        &[("default", 1, 0), ("east", 1, 0), ("west", 3, 0)],
    )
    .await;
    let (_, adjustments) = app
        .get(&format!("/api/products/{product}/adjustments"))
        .await;
    let loss = adjustments
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["reason"] == "transit_loss")
        .unwrap_or_else(|| panic!("no transit loss: {adjustments}"));
    assert_eq!(
        (&loss["delta"], &loss["location_id"]),
        (&json!(-1), &json!(default))
    );
    let (status, body) = app
        .post(&format!("/api/transfers/{transfer}/receive"), &json!({}))
        .await;
    assert_eq!(status, 409, "received twice: {body}");

    // More than the origin has available: refused, with the reason.
    let (status, queued) = app
        .post(
            "/api/transfers",
            &json!({"from": west, "to": east, "lines": [{"product_id": product, "quantity": 50}]}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    let refused = queued["id"].as_str().unwrap().to_string();
    let (status, read) = app.get(&format!("/api/transfers/{refused}?wait=10")).await;
    assert_eq!(status, 409, "{read}");
    assert!(
        read["message"]
            .as_str()
            .unwrap()
            .contains("west has 3 available"),
        "{read}"
    );
    let (status, listed) = app.get("/api/transfers?status=received").await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    app.assert_invariants_and_rebuild().await;
}

async fn bad_locations_append_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let product = app
        .add_product(
            &json!({"sku": "LOC-BAD", "name": "B", "price": 2.0, "category_name": "tests"}),
        )
        .await
        .expect(201)
        .id
        .as_uuid();
    let events_before = app.events("limit=1000").await.expect(200).len();
    let default = LocationId::DEFAULT;
    for (path, body, field) in [
        (
            "/api/transfers".to_string(),
            json!({"from": default, "to": default, "lines": [{"product_id": product, "quantity": 1}]}),
            "to",
        ),
        (
            "/api/transfers".to_string(),
            json!({"from": default, "to": Uuid::now_v7(), "lines": [{"product_id": product, "quantity": 1}]}),
            "to",
        ),
        (
            "/api/transfers".to_string(),
            json!({"from": Uuid::now_v7(), "to": default, "lines": [{"product_id": Uuid::now_v7(), "quantity": 1}]}),
            "from",
        ),
        (
            "/api/transfers".to_string(),
            json!({"from": default, "to": Uuid::now_v7(), "lines": []}),
            "lines",
        ),
        (
            "/api/transfers".to_string(),
            json!({"from": default, "to": Uuid::now_v7(), "lines": [{"product_id": product, "quantity": 0}]}),
            "lines[0].quantity",
        ),
        (
            "/api/locations".to_string(),
            json!({"code": "East Side", "name": "x"}),
            "code",
        ),
        (
            "/api/locations".to_string(),
            json!({"code": "east", "name": " "}),
            "name",
        ),
        (
            "/api/locations".to_string(),
            json!({"code": "east", "name": "x", "priority": 2_000_000}),
            "priority",
        ),
        (
            format!("/api/products/{product}/stock"),
            json!({"quantity": 1, "location_id": Uuid::now_v7()}),
            "location_id",
        ),
        (
            format!("/api/products/{product}/adjustments"),
            json!({"delta": 1, "reason": "found", "location_id": Uuid::now_v7()}),
            "location_id",
        ),
    ] {
        let (status, answer) = app.post(&path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {answer}");
    }
    let answer = app
        .send(
            app.http
                .patch(app.url(&format!("/api/locations/{}", Uuid::now_v7())))
                .json(&json!({"active": false})),
        )
        .await;
    let (status, _) = (answer.status, answer.body);
    assert_eq!(status, 404);
    let answer = app
        .send(
            app.http
                .patch(app.url(&format!("/api/locations/{}", LocationId::DEFAULT)))
                .json(&json!({})),
        )
        .await;
    let (status, _) = (answer.status, answer.body);
    assert_eq!(status, 422);
    let (status, _) = app
        .post(
            &format!("/api/transfers/{}/receive", Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            &format!(
                "/api/purchase-orders/{}/receive?location_id={}",
                Uuid::now_v7(),
                Uuid::now_v7()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(
        status, 422,
        "an unknown location is named before the order is looked up"
    );
    assert_eq!(
        app.events("limit=1000").await.expect(200).len(),
        events_before
    );
    app.stop().await;
}

backend_pairs!(stock_in_several_locations, bad_locations_append_nothing);
