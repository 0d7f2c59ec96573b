//! `POST /api/imports/stock` on each backend pair: a file of adjustments
//! with good and bad rows (a BOM, CRLF line ends), uploaded twice (the
//! second appends nothing); a file of counts; a file too large, of the
//! wrong type or with an unusable header refused whole; a file of 100,000
//! rows refused row by row with a bounded answer; nothing appended by any
//! refusal; the invariants and `rebuild` identical after it all.

use crate::common;

use common::{Api, Backend, TestApp};
use serde_json::Value;

async fn upload(api: &Api, content_type: &str, file: Vec<u8>) -> (u16, Value) {
    let answer = api
        .send(
            api.http
                .post(api.url("/api/imports/stock"))
                .header("content-type", content_type)
                .body(file),
        )
        .await;
    (answer.status, answer.body)
}

async fn requested(api: &Api) -> usize {
    api.events("type=stock.adjustment_requested&limit=1000")
        .await
        .expect(200)
        .len()
}

async fn stock_is_imported_row_by_row_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_product("IMP-A", 1.0, 10).await;
    let b = app.create_product("IMP-B", 1.0, 5).await;
    app.wait_for("stocked", || async {
        app.product(b).await.found().is_some_and(|p| p.on_hand == 5)
    })
    .await;

    let file = b"\xEF\xBB\xBFsku,quantity,reason\r\nIMP-A,-2,damaged\r\nIMP-B,3,found\r\nNOPE-1,1,found\r\nIMP-A,0,found\r\nIMP-B,1,stolen\r\n\r\nIMP-A,abc,found\r\n,1,found\r\n".to_vec();
    let (status, first) = upload(&app, "text/csv", file.clone()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["kind"], "adjustments");
    assert_eq!(
        (first["accepted"].as_u64(), first["refused_count"].as_u64()),
        (Some(2), Some(5)),
        "{first}"
    );
    let refused: Vec<(u64, String)> = first["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lines: Vec<u64> = refused.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, [4, 5, 6, 8, 9], "{first}");
    for (at, field) in [
        (0, "sku: no such product"),
        (1, "quantity:"),
        (2, "reason:"),
        (3, "quantity:"),
        (4, "sku:"),
    ] {
        assert!(refused[at].1.starts_with(field), "{refused:?}");
    }
    app.wait_for("the rows applied", || async {
        let a = app.product(a).await.expect(200).on_hand;
        let b = app.product(b).await.expect(200).on_hand;
        (a, b) == (8, 8)
    })
    .await;
    let adjustments = app.adjustments(a, "").await.expect(200);
    assert!(
        adjustments[0]
            .reference
            .as_deref()
            .unwrap()
            .starts_with("import "),
        "{adjustments:?}"
    );

    // The same file again: every good row was imported, nothing appended.
    let (status, again) = upload(&app, "text/csv; charset=utf-8", file).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["file"], first["file"]);
    assert_eq!(
        (
            again["accepted"].as_u64(),
            again["already_imported"].as_u64()
        ),
        (Some(0), Some(2)),
        "{again}"
    );
    assert_eq!(requested(&app).await, 2);

    // Counts.
    let (status, counts) = upload(
        &app,
        "text/csv",
        b"sku,counted\nIMP-A,6\nIMP-B,-1\n".to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{counts}");
    assert_eq!(
        (
            counts["kind"].as_str(),
            counts["accepted"].as_u64(),
            counts["refused_count"].as_u64()
        ),
        (Some("counts"), Some(1), Some(1))
    );
    app.wait_for("the count applied", || async {
        app.product(a).await.expect(200).on_hand == 6
    })
    .await;

    // Whole files refused, nothing appended.
    let before = requested(&app).await;
    let (status, body) = upload(&app, "text/csv", b"sku,amount\nIMP-A,1\n".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("file:"),
        "{body}"
    );
    let (status, _) = upload(&app, "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    let mut huge = b"sku,quantity,reason\n".to_vec();
    while huge.len() <= 16 * 1024 * 1024 {
        huge.extend_from_slice(b"IMP-A,1,found\n");
    }
    let (status, body) = upload(&app, "text/csv", huge).await;
    assert_eq!(status, 413, "{body}");
    // 100,000 rows of unknown products: each refused, the answer bounded.
    let mut many = b"sku,quantity,reason\r\n".to_vec();
    for n in 0..100_000 {
        many.extend_from_slice(format!("GHOST-{n},1,found\r\n").as_bytes());
    }
    let (status, body) = upload(&app, "text/csv", many).await;
    assert_eq!(status, 202);
    assert_eq!(
        (
            body["rows"].as_u64(),
            body["refused_count"].as_u64(),
            body["accepted"].as_u64()
        ),
        (Some(100_000), Some(100_000), Some(0))
    );
    assert_eq!(body["refused"].as_array().unwrap().len(), 1_000);
    assert_eq!(body["refused"][999]["line"], 1_001);
    assert_eq!(requested(&app).await, before);

    app.assert_invariants_and_rebuild().await;
}

backend_pairs!(stock_is_imported_row_by_row_once);
