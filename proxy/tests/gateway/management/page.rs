//! The management page in a real headless Chromium (Debian's): logged in,
//! it shows a queue filled over AMQP with its count; a screenshot is kept
//! as a test artifact (`<target>/tmp/management-page.png`).

use lapin::types::FieldTable;

use crate::consume::{fill, queue_with_channel};
use crate::harness::{unique, TestGateway};

/// Runs headless Chromium on the blocking pool (the gateway answers on this
/// test's runtime); its stdout.
async fn chromium(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=10000",
                "--window-size=1200,700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&args)
            .output()
            .expect("chromium runs (Debian's chromium package)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_page_shows_a_queue_filled_over_amqp() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let conn = gw.connect().await;
    let q = unique("page-q");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 7).await;

    let url = format!("http://{api}/#/login/guest/guest/queues");
    let dom = chromium(vec!["--dump-dom".into(), url.clone()]).await;
    assert!(
        dom.contains("data-loaded=\"queues\""),
        "the queues view rendered: {dom}"
    );
    assert!(
        dom.contains("<form id=\"login\" hidden=\"\">"),
        "logged in from the URL: {dom}"
    );
    let row_start = dom
        .find(&format!("<tr data-name=\"{q}\">"))
        .unwrap_or_else(|| panic!("a row for {q} in {dom}"));
    let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').unwrap() + 1..];
            &text[..text.find('<').unwrap_or(text.len())]
        })
        .collect();
    assert_eq!(cells[0], "/", "vhost: {row}");
    assert_eq!(cells[1], q, "name: {row}");
    assert_eq!(cells[2], "7", "ready: {row}");
    assert_eq!(cells[3], "0", "unacked: {row}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("management-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(vec![format!("--screenshot={}", shot.display()), url]).await;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "a screenshot of the page at {}",
        shot.display()
    );
}
