//! A table-driven tour of bad input, several hundred cases generated from
//! each route's valid request: every field missing, null, of every wrong
//! JSON type, zero, negative, huge, fractional, too long or not a UUID;
//! whole bodies that are not JSON, not an object, empty or too large; bad
//! path ids and query values. Each gets a 4xx with the error shape, and a
//! field mistake names the field; none gets a 5xx, a panic or a hang, and
//! nothing is recorded.

use crate::common;

use common::{Backend, TestApp};
use serde_json::{json, Map, Value};

/// One request to try.
struct Case {
    what: String,
    method: reqwest::Method,
    path: String,
    body: Option<RawBody>,
    /// A word the error message must contain (the field's name).
    names: Option<String>,
}

enum RawBody {
    Json(Value),
    Text(&'static str, String),
}

/// A field of a valid body and what it may legally be.
struct Field {
    name: &'static str,
    required: bool,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A count of units, 1..=1,000,000 (or 0..= for levels).
    Count {
        min: i64,
    },
    Price,
    Text {
        max: usize,
    },
    Uuid,
}

/// Values of the wrong JSON type for `kind`.
fn wrong_types(kind: Kind) -> Vec<(&'static str, Value)> {
    let mut values = vec![
        ("an array", json!([1, 2])),
        ("an object", json!({ "a": 1 })),
        ("a boolean", json!(true)),
    ];
    match kind {
        Kind::Count { .. } | Kind::Price => {
            values.push(("a word", json!("many")));
            values.push(("a number in a string", json!("5")));
        }
        Kind::Text { .. } | Kind::Uuid => {
            values.push(("a number", json!(42)));
            values.push(("a list of text", json!(["a"])));
        }
    }
    values
}

/// Values of the right type but outside what `kind` allows.
fn bad_values(kind: Kind) -> Vec<(&'static str, Value)> {
    match kind {
        Kind::Count { min } => {
            let mut values = vec![
                ("negative", json!(-1)),
                ("very negative", json!(i64::MIN)),
                ("over the maximum", json!(1_000_001)),
                ("huge", json!(i64::MAX)),
                ("beyond i64", json!(1e30)),
                ("fractional", json!(1.5)),
            ];
            if min > 0 {
                values.push(("zero", json!(0)));
            }
            values
        }
        Kind::Price => vec![
            ("negative", json!(-1)),
            ("over the maximum", json!(10_000_001)),
            ("huge", json!(1e300)),
            ("too precise", json!(1.001)),
        ],
        Kind::Text { max } => vec![
            ("too long", json!("x".repeat(max + 1))),
            ("far too long", json!("y".repeat(20_000))),
            ("blank", json!("   ")),
            ("empty", json!("")),
            ("with a control character", json!("a\u{0007}b")),
        ],
        Kind::Uuid => vec![
            ("empty", json!("")),
            ("not a UUID", json!("not-a-uuid")),
            (
                "a UUID with a tail",
                json!(format!("{}-x", uuid::Uuid::nil())),
            ),
            ("too short", json!("01234567-89ab")),
        ],
    }
}

/// Every mutation of one field of `valid` (an object) at `path`.
fn field_cases(
    method: &reqwest::Method,
    route: &str,
    valid: &Value,
    field: &Field,
    set: &dyn Fn(&mut Value, Option<Value>),
) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |what: String, value: Option<Value>, names: bool| {
        let mut body = valid.clone();
        set(&mut body, value);
        cases.push(Case {
            what: format!("{route}: {} {what}", field.name),
            method: method.clone(),
            path: route.to_string(),
            body: Some(RawBody::Json(body)),
            names: names.then(|| field.name.to_string()),
        });
    };
    if field.required {
        push("missing".into(), None, true);
        push("null".into(), Some(Value::Null), true);
    }
    for (what, value) in wrong_types(field.kind) {
        push(format!("as {what}"), Some(value), true);
    }
    for (what, value) in bad_values(field.kind) {
        // An optional text left empty means "the default" (the reference's
        // clients send `"category_name": ""`).
        if !field.required && value == json!("") {
            continue;
        }
        push(what.into(), Some(value), true);
    }
    cases
}

fn set_top(name: &'static str) -> impl Fn(&mut Value, Option<Value>) {
    move |body, value| {
        let fields: &mut Map<String, Value> = body.as_object_mut().unwrap();
        match value {
            Some(value) => fields.insert(name.into(), value),
            None => fields.remove(name),
        };
    }
}

fn set_in_item(name: &'static str) -> impl Fn(&mut Value, Option<Value>) {
    move |body, value| {
        let item = body["items"][0].as_object_mut().unwrap();
        match value {
            Some(value) => item.insert(name.into(), value),
            None => item.remove(name),
        };
    }
}

/// Bodies that are no request at all.
fn whole_body_cases(route: &str) -> Vec<Case> {
    let json = "application/json";
    let raw = |what: &str, content_type: &'static str, text: String| Case {
        what: format!("{route}: {what}"),
        method: reqwest::Method::POST,
        path: route.to_string(),
        body: Some(RawBody::Text(content_type, text)),
        names: None,
    };
    vec![
        raw("not JSON", json, "hello".into()),
        raw("truncated JSON", json, "{\"sku\": ".into()),
        raw("trailing garbage", json, "{} }".into()),
        raw("empty body", json, String::new()),
        raw("a JSON array", json, "[1, 2, 3]".into()),
        raw("a JSON string", json, "\"text\"".into()),
        raw("JSON null", json, "null".into()),
        raw(
            "a form, not JSON",
            "application/x-www-form-urlencoded",
            "a=1".into(),
        ),
        raw("no content type", "text/plain", "{}".into()),
        raw(
            "nested too deep",
            json,
            "[".repeat(5_000) + &"]".repeat(5_000),
        ),
        raw(
            "over 64 KiB",
            json,
            format!("{{\"sku\": \"{}\"}}", "z".repeat(70_000)),
        ),
        raw("an unknown field", json, "{\"surprise\": 1}".into()),
    ]
}

fn cases(product: &str) -> Vec<Case> {
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let mut cases = Vec::new();

    let product_body = json!({
        "sku": "MAL-NEW", "name": "New", "price": 2.5, "category_name": "Tests",
        "low_stock_threshold": 3, "reorder_quantity": 10, "initial_stock": 4
    });
    for field in [
        Field {
            name: "sku",
            required: true,
            kind: Kind::Text { max: 64 },
        },
        Field {
            name: "name",
            required: true,
            kind: Kind::Text { max: 200 },
        },
        Field {
            name: "price",
            required: true,
            kind: Kind::Price,
        },
        Field {
            name: "category_name",
            required: false,
            kind: Kind::Text { max: 200 },
        },
        Field {
            name: "low_stock_threshold",
            required: false,
            kind: Kind::Count { min: 0 },
        },
        Field {
            name: "reorder_quantity",
            required: false,
            kind: Kind::Count { min: 0 },
        },
        Field {
            name: "initial_stock",
            required: false,
            kind: Kind::Count { min: 0 },
        },
    ] {
        cases.extend(field_cases(
            &post,
            "/api/products",
            &product_body,
            &field,
            &set_top(field.name),
        ));
    }

    let stock_route = format!("/api/products/{product}/stock");
    let quantity = Field {
        name: "quantity",
        required: true,
        kind: Kind::Count { min: 1 },
    };
    cases.extend(field_cases(
        &post,
        &stock_route,
        &json!({ "quantity": 2 }),
        &quantity,
        &set_top("quantity"),
    ));

    let order_body = json!({
        "customer_email": "mal@example.com",
        "items": [{ "product_id": product, "quantity": 1 }]
    });
    let email = Field {
        name: "customer_email",
        required: true,
        kind: Kind::Text { max: 254 },
    };
    cases.extend(field_cases(
        &post,
        "/api/orders",
        &order_body,
        &email,
        &set_top("customer_email"),
    ));
    for field in [
        Field {
            name: "product_id",
            required: true,
            kind: Kind::Uuid,
        },
        Field {
            name: "quantity",
            required: true,
            kind: Kind::Count { min: 1 },
        },
        Field {
            name: "unit_price",
            required: false,
            kind: Kind::Price,
        },
    ] {
        cases.extend(field_cases(
            &post,
            "/api/orders",
            &order_body,
            &field,
            &set_in_item(field.name),
        ));
    }
    for (what, body, names) in [
        (
            "no items",
            json!({ "customer_email": "a@example.com", "items": [] }),
            "items",
        ),
        (
            "items not a list",
            json!({ "customer_email": "a@example.com", "items": {} }),
            "items",
        ),
        (
            "items missing",
            json!({ "customer_email": "a@example.com" }),
            "items",
        ),
        (
            "an unknown product",
            json!({ "customer_email": "a@example.com", "items": [{ "product_id": uuid::Uuid::now_v7(), "quantity": 1 }] }),
            "product_id",
        ),
        (
            "a wrong unit price",
            json!({ "customer_email": "a@example.com", "items": [{ "product_id": product, "quantity": 1, "unit_price": 0.01 }] }),
            "unit_price",
        ),
        (
            "too many items",
            json!({ "customer_email": "a@example.com", "items": vec![json!({ "product_id": product, "quantity": 1 }); 101] }),
            "items",
        ),
        (
            "an email without @",
            json!({ "customer_email": "nobody", "items": [{ "product_id": product, "quantity": 1 }] }),
            "customer_email",
        ),
        (
            "an email with a space",
            json!({ "customer_email": "a b@example.com", "items": [{ "product_id": product, "quantity": 1 }] }),
            "customer_email",
        ),
    ] {
        cases.push(Case {
            what: format!("/api/orders: {what}"),
            method: post.clone(),
            path: "/api/orders".into(),
            body: Some(RawBody::Json(body)),
            names: Some(names.into()),
        });
    }

    for route in ["/api/products", "/api/orders", &stock_route] {
        cases.extend(whole_body_cases(route));
    }

    // Ids in paths that are no UUIDs.
    let long = "f".repeat(300);
    for bad in [
        "123",
        "not-a-uuid",
        "%00",
        "0000",
        long.as_str(),
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "%7B00000000-0000-0000-0000-000000000000%7D",
        "00000000-0000-0000-0000-00000000000",
        "..%2F..%2Fetc%2Fpasswd",
    ] {
        for path in [format!("/api/products/{bad}"), format!("/api/orders/{bad}")] {
            cases.push(Case {
                what: format!("GET {path}"),
                method: get.clone(),
                path,
                body: None,
                names: None,
            });
        }
        for path in [
            format!("/api/products/{bad}/stock"),
            format!("/api/orders/{bad}/cancel"),
            format!("/api/orders/{bad}/ship"),
            format!("/api/purchase-orders/{bad}/receive"),
        ] {
            cases.push(Case {
                what: format!("POST {path}"),
                method: post.clone(),
                path,
                body: Some(RawBody::Json(json!({ "quantity": 1 }))),
                names: None,
            });
        }
    }

    // Query values.
    for (query, names) in [
        ("/api/products?limit=0", "limit"),
        ("/api/products?limit=-1", "limit"),
        ("/api/products?limit=1001", "limit"),
        ("/api/products?limit=ten", "limit"),
        ("/api/products?limit=99999999999999999999", "limit"),
        ("/api/products?after=nope", "after"),
        ("/api/orders?status=LOST", "status"),
        ("/api/orders?limit=0", "limit"),
        ("/api/orders?after=123", "after"),
        (
            "/api/orders/00000000-0000-0000-0000-000000000000?wait=soon",
            "wait",
        ),
        (
            "/api/orders/00000000-0000-0000-0000-000000000000?wait=-1",
            "wait",
        ),
        ("/api/purchase-orders?status=SHIPPED", "status"),
        ("/api/purchase-orders?limit=5000", "limit"),
        ("/api/events?limit=0", "limit"),
        ("/api/events?after=xyz", "after"),
        ("/api/alerts?limit=0", "limit"),
        ("/api/alerts?limit=abc", "limit"),
        ("/api/dead-letters?limit=100000", "limit"),
    ] {
        cases.push(Case {
            what: format!("GET {query}"),
            method: get.clone(),
            path: query.into(),
            body: None,
            names: Some(names.into()),
        });
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_malformed_requests_get_clear_4xx() {
    let app = TestApp::spawn(Backend::EmbeddedSqlite).await;
    let product = app.create_product("MAL-1", 9.99, 5).await.to_string();
    let before = app.stats().await.expect(200).figures;
    let cases = cases(&product);
    assert!(cases.len() >= 250, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut request = app.http.request(case.method.clone(), app.url(&case.path));
        request = match &case.body {
            Some(RawBody::Json(body)) => request.json(body),
            Some(RawBody::Text(content_type, text)) => request
                .header("content-type", *content_type)
                .body(text.clone()),
            None => request,
        };
        // Checked against the OpenAPI document too: every refusal must be
        // one the route documents.
        let answer = app
            .send(request.timeout(std::time::Duration::from_secs(10)))
            .await;
        let (status, text, body) = (answer.status, answer.text, answer.body);
        let code = body["error"]["code"].as_str().unwrap_or("");
        let message = body["error"]["message"].as_str().unwrap_or("");
        let named = case
            .names
            .as_ref()
            .is_none_or(|name| message.contains(name.as_str()));
        if !(400..500).contains(&status) || code.is_empty() || message.is_empty() || !named {
            failures.push(format!("{} → {status} {text}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing was recorded: the same one product, no order.
    let after = app.stats().await.expect(200).figures;
    assert_eq!(after.products, before.products);
    assert_eq!(after.order_count, 0);
    assert_eq!(app.product(&product).await.expect(200).on_hand, 5);
    app.stop().await;
}
