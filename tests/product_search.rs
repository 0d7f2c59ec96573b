//! `GET /api/products` searched, filtered and sorted, on each backend pair:
//! text in the SKU or name (any case, wildcards taken literally), a
//! category, low stock, each sort both ways, keyset paging that holds in
//! every sort, bad parameters named, and the CSV export of every product.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::json;
use streamstock::store::queries::ProductView;

async fn listed(api: &Api, query: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/api/products?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    let products: Vec<ProductView> = serde_json::from_value(body).unwrap();
    products.into_iter().map(|p| p.sku).collect()
}

async fn products_are_searched_filtered_and_sorted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // (sku, name, category, stock, threshold)
    let catalog = [
        ("BOLT-1", "Hex bolt", "hardware", 5, 10),
        ("NUT-1", "Hex nut", "hardware", 50, 10),
        ("GLUE-1", "Wood glue 50%", "supplies", 0, 2),
        ("BOLT-2", "Carriage bolt", "hardware", 20, 10),
    ];
    for (sku, name, category, stock, threshold) in catalog {
        app.add_product(
            &json!({"sku": sku, "name": name, "price": 1.0, "category_name": category,
                                "initial_stock": stock, "low_stock_threshold": threshold}),
        )
        .await
        .expect(201);
    }
    app.wait_for("the catalog applied with its stock", || async {
        let products = app.products().await.expect(200);
        products.len() == 4 && products.iter().map(|p| p.on_hand).sum::<i64>() == 75
    })
    .await;

    // Text in the SKU or the name, any case; creation order by default.
    assert_eq!(listed(&app, "q=bolt").await, ["BOLT-1", "BOLT-2"]);
    assert_eq!(listed(&app, "q=HEX").await, ["BOLT-1", "NUT-1"]);
    assert_eq!(listed(&app, "q=t-1").await, ["BOLT-1", "NUT-1"]);
    // Wildcards are literal.
    assert_eq!(listed(&app, "q=50%25").await, ["GLUE-1"]);
    assert!(listed(&app, "q=%25%25").await.is_empty());
    assert!(listed(&app, "q=_").await.is_empty());
    // A category, low stock, and both with text.
    assert_eq!(listed(&app, "category=supplies").await, ["GLUE-1"]);
    assert_eq!(listed(&app, "low_stock=true").await, ["BOLT-1", "GLUE-1"]);
    assert_eq!(
        listed(&app, "low_stock=true&category=hardware&q=bolt").await,
        ["BOLT-1"]
    );

    // Each sort, both ways.
    assert_eq!(
        listed(&app, "sort=sku").await,
        ["BOLT-1", "BOLT-2", "GLUE-1", "NUT-1"]
    );
    assert_eq!(
        listed(&app, "sort=name").await,
        ["BOLT-2", "BOLT-1", "NUT-1", "GLUE-1"]
    );
    assert_eq!(
        listed(&app, "sort=available&order=desc").await,
        ["NUT-1", "BOLT-2", "BOLT-1", "GLUE-1"]
    );
    assert_eq!(
        listed(&app, "sort=on_hand").await,
        ["GLUE-1", "BOLT-1", "BOLT-2", "NUT-1"]
    );

    // Keyset paging holds in a sort: each page starts after the last.
    for query in [
        "sort=available&order=desc",
        "sort=name",
        "sort=sku&order=desc",
        "order=desc",
    ] {
        let all = listed(&app, query).await;
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page_query = match &after {
                Some(id) => format!("{query}&limit=3&after={id}"),
                None => format!("{query}&limit=3"),
            };
            let (status, body) = app.get(&format!("/api/products?{page_query}")).await;
            assert_eq!(status, 200, "{body}");
            let page: Vec<ProductView> = serde_json::from_value(body).unwrap();
            if page.is_empty() {
                break;
            }
            after = Some(page.last().unwrap().id.to_string());
            paged.extend(page.into_iter().map(|p| p.sku));
        }
        assert_eq!(paged, all, "{query}");
    }

    // Bad parameters are named.
    for (query, field) in [
        ("sort=price", "sort"),
        ("order=up", "order"),
        (&*format!("q={}", "x".repeat(201)), "q"),
    ] {
        let (status, body) = app.get(&format!("/api/products?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, _) = app.get("/api/products?low_stock=maybe").await;
    assert!((400..500).contains(&status), "{status}");

    // The export: every product with its figures, in creation order.
    let export = app
        .send(app.http.get(app.url("/api/products/export.csv")))
        .await;
    assert_eq!(export.status, 200);
    assert!(export
        .header("content-type")
        .unwrap()
        .starts_with("text/csv"));
    let mut csv = csv::Reader::from_reader(export.text.as_bytes());
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header[..3], ["id", "sku", "name"]);
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let skus: Vec<&str> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(skus, ["BOLT-1", "NUT-1", "GLUE-1", "BOLT-2"]);
    assert_eq!(&rows[2][2], "Wood glue 50%");
    assert_eq!(
        (&rows[1][4], &rows[1][7], &rows[1][9]),
        ("1.00", "50", "50")
    );
    app.stop().await;
}

backend_pairs!(products_are_searched_filtered_and_sorted);
