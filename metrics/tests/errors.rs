//! A source that cannot see must say so: refused connections, silent servers and garbage
//! answers are errors, never values.

use std::time::{Duration, SystemTime};

use signalbox_analysis::Observation;
use signalbox_metrics::{Cohort, Instance, Prometheus, Scrape, Scraper, Source, demo_queries};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn group(address: String) -> Cohort {
    Cohort {
        service: "checkout".into(),
        version: "1.0.0".into(),
        instances: vec![Instance {
            id: "i-0000".into(),
            address,
        }],
        ..Cohort::default()
    }
}

/// An address nothing listens on: bound, then released.
async fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn is_error(o: &Observation, needle: &str) -> bool {
    matches!(o, Observation::Error { error } if error.contains(needle))
}

#[tokio::test]
async fn a_silent_prometheus_times_out_into_errors() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut source = Prometheus::new(url, Duration::from_millis(300));
    for (name, query) in demo_queries(Duration::from_secs(30)) {
        source = source.with_query(&name, &query).unwrap();
    }
    let read = source
        .read(
            &["error_rate", "cpu"],
            &group("unused:1".into()),
            SystemTime::now(),
        )
        .await;
    assert!(is_error(&read[0], "timed out"), "{read:?}");
    assert!(is_error(&read[1], "no query"), "{read:?}");
    drop(listener);
}

#[tokio::test]
async fn a_refused_or_garbled_scrape_is_an_error_for_every_metric() {
    let scrape = Scrape::default();
    let closed = group(closed_address().await);
    let read = scrape
        .read(&["error_rate", "requests"], &closed, SystemTime::now())
        .await;
    assert!(read.iter().all(|o| is_error(o, "/metrics")), "{read:?}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let body = "this is { not exposition\n";
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
        }
    });
    let garbled = Scraper::default()
        .counters(&format!("http://{address}/metrics"))
        .await;
    assert!(garbled.is_err(), "{garbled:?}");
    server.abort();
}

#[tokio::test]
async fn a_direct_scrape_refuses_to_read_the_past() {
    let scrape = Scrape::default();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let read = scrape
        .read(&["error_rate"], &group(closed_address().await), an_hour_ago)
        .await;
    assert!(is_error(&read[0], "reads only the present"), "{read:?}");
}
