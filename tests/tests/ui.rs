//! Operators inspect deploys in the Temporal Web UI: headless Chromium against the dev server's
//! UI opens the workflow list filtered by a search attribute and a deploy's detail pages, and
//! keeps screenshots as test artifacts.

use std::path::PathBuf;

use signalbox_devstack::browser::{dump_dom, screenshot};
use signalbox_devstack::free_port;
use signalbox_domain::Phase;
use signalbox_localstack::{DEPLOY_DEADLINE, LoadedFleet, Stack, StackOptions, demo_build, publish, request};
use signalbox_tests::{run, scratch};

/// Where screenshots are kept: `$SIGNALBOX_TEST_ARTIFACTS`, else `test-artifacts` beside the
/// build's target directory.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("SIGNALBOX_TEST_ARTIFACTS").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test binary path");
        exe.ancestors().nth(3).expect("target dir").join("test-artifacts")
    });
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_web_ui_finds_a_deploy_by_search_attribute_and_shows_service_and_phase() {
    run(async {
        let mut options = StackOptions::in_dir(scratch("ui"));
        options.ui_port = Some(free_port()?);
        let s = Stack::start(options).await?;
        let ui = s.server.ui_url().expect("the stack serves the UI");
        let base = publish(&s.home, demo_build("storefront", "6.0.0", 0.002, 5)).await?;
        let next = publish(&s.home, demo_build("storefront", "6.1.0", 0.002, 5)).await?;
        let _fleet = LoadedFleet::start(&s.home, "ui", 4, base, 200, &s.options.dir).await?;
        let deploys = s.deploys().await?;
        let id = deploys.start(request("storefront", "ui", next), None).await?.id;
        let status = tokio::time::timeout(DEPLOY_DEADLINE, deploys.result(&id)).await??;
        assert_eq!(status.phase, Phase::Succeeded);

        // The list, filtered by the service's search attribute, holds the deploy; filtered by
        // another service, it does not.
        let ns = &s.options.namespace;
        let list = |service: &str| format!("{ui}/namespaces/{ns}/workflows?query={}", encode(&format!("SignalboxService=\"{service}\"")));
        let matching = dump_dom(&list("storefront"))?;
        assert!(matching.contains(&id), "the filtered list shows {id}");
        let other = dump_dom(&list("no-such-service"))?;
        assert!(!other.contains(&id), "a filter on another service hides {id}");
        screenshot(&list("storefront"), &artifacts().join("ui-workflow-list.png"))?;

        // The detail page links its tabs; the search-attributes tab shows service and phase.
        let detail = dump_dom(&format!("{ui}/namespaces/{ns}/workflows/{}", encode(&id)))?;
        let tab = detail
            .split("href=\"")
            .filter_map(|rest| rest.split('"').next())
            .find(|href| href.ends_with("/search-attributes"))
            .ok_or_else(|| anyhow::anyhow!("the detail page links its search attributes"))?
            .to_owned();
        let attributes = dump_dom(&format!("{ui}{tab}"))?;
        for shown in ["SignalboxService", "storefront", "SignalboxPhase", "Succeeded", "SignalboxArtifactDigest"] {
            assert!(attributes.contains(shown), "the search attributes tab shows {shown}");
        }
        let memo = dump_dom(&format!("{ui}{}", tab.replace("/search-attributes", "/memo")))?;
        assert!(memo.contains("storefront 6.1.0"), "the memo shows the config summary");
        screenshot(&format!("{ui}{tab}"), &artifacts().join("ui-deploy-search-attributes.png"))?;
        screenshot(&format!("{ui}/namespaces/{ns}/workflows/{}", encode(&id)), &artifacts().join("ui-deploy-detail.png"))?;
        Ok(())
    });
}

/// The compose stack's gate in front of the UI (`deploy/nginx/ui-gate.conf`, as committed, with
/// its paths and names pointed at this machine), run by real nginx in front of the dev
/// server's UI: HTTPS only, and nothing without the login.
#[test]
fn the_ui_gate_asks_for_a_login_before_it_shows_the_ui() {
    run(async {
        let mut options = StackOptions::in_dir(scratch("ui-gate"));
        options.ui_port = Some(free_port()?);
        let s = Stack::start(options).await?;
        let ui = s.server.ui_url().expect("the stack serves the UI");
        let dir = s.options.dir.join("gate");
        let pki = signalbox_tests::pki::Pki::new(&dir)?;
        pki.server("ui")?;
        std::fs::write(dir.join("ui.htpasswd"), "admin:{PLAIN}correct horse battery staple\n")?;
        let conf = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/ui-gate.conf"))?;
        assert!(conf.contains("listen 8443 ssl;") && conf.contains("http://temporal-ui:8080") && conf.contains("/etc/signalbox/auth/"), "{conf}");
        let auth = format!("{}/", dir.display());
        let gate = signalbox_devstack::nginx::Nginx::serving(&dir, |port| {
            conf.replace("listen 8443 ssl;", &format!("listen 127.0.0.1:{port} ssl;")).replace("http://temporal-ui:8080", ui.trim_end_matches('/')).replace("/etc/signalbox/auth/", &auth)
        })
        .await?;
        let path = format!("/namespaces/{}/workflows", s.options.namespace);
        let ca = pki.ca();
        let get = |login: Option<&str>| https_get(gate.port(), &ca, &path, login.map(str::to_owned));

        let (status, head, _) = get(None).await?;
        assert_eq!(status, 401, "no login, no UI");
        assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"temporal ui\""), "{head}");
        assert_eq!(get(Some("admin:guess")).await?.0, 401, "a wrong password, no UI");
        let (status, _, page) = get(Some("admin:correct horse battery staple")).await?;
        assert_eq!(status, 200);
        let direct = reqwest::get(format!("{}{path}", ui.trim_end_matches('/'))).await?.text().await?;
        assert!(!page.is_empty() && page == direct, "the gate shows the UI's own page: {}", &page[..page.len().min(300)]);
        // Plain HTTP to the gate's port is not served.
        let plain = reqwest::get(format!("http://127.0.0.1:{}/", gate.port())).await?;
        assert_eq!(plain.status().as_u16(), 400, "nginx answers plain HTTP on a TLS port with 400");
        Ok(())
    });
}

/// `GET path` (HTTP/1.0: the answer comes whole, not chunked) over HTTPS from `localhost:port`, trusting `ca`, with HTTP basic `login`
/// (`user:password`): the status, the head and the body.
async fn https_get(port: u16, ca: &std::path::Path, path: &str, login: Option<String>) -> anyhow::Result<(u16, String, String)> {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::{CertificateDer, ServerName, pem::PemObject}};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(ServerName::try_from("localhost")?, tcp).await?;
    let auth = login.map(|l| format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(l))).unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await?;
    let mut answer = Vec::new();
    // nginx may close without a TLS close_notify once the answer is sent.
    if let Err(e) = tls.read_to_end(&mut answer).await {
        anyhow::ensure!(!answer.is_empty(), "reading the answer: {e}");
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("no status line in {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}
