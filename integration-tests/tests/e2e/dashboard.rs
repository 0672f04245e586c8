//! The dashboard in a real browser (Debian's headless chromium, driven over the DevTools
//! protocol) against a control plane with real agents: the fleet page lists the agents, the
//! rollout page follows a new revision to every agent without a reload and shows a NACK with
//! its reason, the history page diffs a change, a canary rollout shows its stage and gates; with authentication on, the page asks for a
//! token, keeps it out of the page's reach and the URL, and offers rollback to operators only.
//! Screenshots go to `target/test-artifacts/dashboard/`.

use std::time::Duration;

use portico_integration_tests::agent::{Agent, AgentOptions};
use portico_integration_tests::browser::{Browser, Page, artifacts_dir};
use portico_integration_tests::cli::{Files, agent_listeners_yaml};
use portico_integration_tests::cp::{ControlPlane, CpOptions};
use portico_test_support::net::free_port;

/// How long the page may take to show what the control plane knows: a 2 s poll, an agent's
/// ACK, a slow debug build.
const SHOW: Duration = Duration::from_secs(30);

/// Listeners `edge-1`, `edge-2` (one per agent) with a route table answering `body`, plus
/// `extra` documents.
fn config(ports: &[u16], body: &str, extra: &str) -> String {
    let mut docs = agent_listeners_yaml(ports);
    docs.push(format!(
        "kind: RouteTable\nname: main\nspec:\n  virtual_hosts:\n    - domains: [\"*\"]\n      routes:\n\
         \x20       - {{name: hello, match: {{prefix: /}}, action: {{direct_response: {{status: 200, body: {body}}}}}}}\n"
    ));
    if !extra.is_empty() {
        docs.push(extra.to_string());
    }
    docs.join("---\n")
}

/// Saves a screenshot of `page` as `dashboard/NAME.png` among the test artifacts.
async fn screenshot(page: &Page, name: &str) {
    let path = artifacts_dir()
        .join("dashboard")
        .join(format!("{name}.png"));
    page.screenshot(&path)
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e:#}"));
}

/// Shows view `name` (`#/name`) and waits until it has refreshed since.
async fn show(page: &Page, name: &str) {
    let before = page
        .eval("Number(document.querySelector('#view')?.dataset.refreshes ?? 0)")
        .await
        .unwrap();
    page.eval(&format!("location.hash = '#/{name}'"))
        .await
        .unwrap();
    page.wait_for(
        &format!(
            "document.querySelector('#view')?.dataset.view === '{name}' && \
             Number(document.querySelector('#view').dataset.refreshes) > {before}"
        ),
        &format!("the {name} view to load"),
        SHOW,
    )
    .await
    .unwrap();
}

/// The text of the first element matching `selector` (null when none).
fn text_of(selector: &str) -> String {
    format!("(document.querySelector({selector:?})?.textContent?.trim() ?? null)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_fleet_and_follows_a_rollout_and_a_nack_live() {
    let cp = ControlPlane::embedded_with(CpOptions::with_web);
    let files = Files::new();
    let ports = [free_port(), free_port()];
    let first = cp.apply_text(&files, &config(&ports, "v1", ""), &[]);
    let agents: Vec<Agent> = (1..=2)
        .map(|n| {
            Agent::start(
                &AgentOptions::new(&format!("a{n}"), &[cp.endpoint()])
                    .label("node", &format!("a{n}")),
            )
        })
        .collect();
    for a in &agents {
        a.wait_for_version(first).await;
    }

    let browser = Browser::launch().await.unwrap();
    let page = browser.new_page().await.unwrap();
    page.goto(&format!("{}/", cp.web_url())).await.unwrap();
    show(&page, "fleet").await;
    // Both agents, in sync, with the agents' region and zone summed.
    page.wait_for(
        "['a1', 'a2'].every(id => document.querySelector(\
           `#fleet-agents tbody tr[data-node-id=\"${id}\"]`)?.dataset.state === 'in-sync')",
        "both agents in sync on the fleet page",
        SHOW,
    )
    .await
    .unwrap();
    let total = page
        .eval(&text_of("#fleet-total [data-count=\"agents\"]"))
        .await
        .unwrap();
    assert_eq!(total, "2");
    let group = page
        .eval("document.querySelectorAll('#fleet-groups tbody tr[data-region=\"eu\"][data-zone=\"eu-1\"]').length")
        .await
        .unwrap();
    assert_eq!(group, 1);
    screenshot(&page, "fleet").await;

    // A new revision: the rollout page, left open, follows it to both agents.
    show(&page, "rollout").await;
    let second = cp.apply_text(&files, &config(&ports, "v2", ""), &[]);
    page.wait_for(
        &format!(
            "{} === '{second}' && {} === '2'",
            text_of("#rollout-revision"),
            text_of("#rollout-counts [data-count=\"applied\"]")
        ),
        "the new revision applied by both agents on the rollout page",
        SHOW,
    )
    .await
    .unwrap();
    let percent = page
        .eval("document.querySelector('#rollout-progress')?.dataset.percent")
        .await
        .unwrap();
    assert_eq!(percent, "100");
    screenshot(&page, "rollout").await;

    // A listener for a1 on a port something else holds: a1 NACKs, and the page shows why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listener = format!(
        "kind: Listener\nname: taken\nspec:\n  address: 127.0.0.1\n  port: {port}\n  protocol: HTTP\n  route_table: main\n  selector: {{labels: {{node: a1}}}}\n"
    );
    let third = cp.apply_text(&files, &config(&ports, "v2", &listener), &[]);
    let shown = page
        .wait_for(
            &format!(
                "{} === '{third}' && {}",
                text_of("#rollout-revision"),
                text_of("#rollout-nacks li[data-node-id=\"a1\"]")
            ),
            "a1's NACK on the rollout page",
            SHOW,
        )
        .await
        .unwrap();
    let record = cp.agent_record("a1").await.expect("a1's record");
    let reason = record.last_nack.expect("a1 NACKed").error;
    assert!(reason.contains(&port.to_string()), "{reason}");
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        shown.contains(&reason),
        "the page shows {shown:?}, a1 said {reason:?}"
    );
    screenshot(&page, "rollout-nack").await;

    show(&page, "fleet").await;
    page.wait_for(
        "document.querySelector('#fleet-agents tbody tr[data-node-id=\"a1\"]')?.dataset.state === 'nacked'",
        "a1 NACKed on the fleet page",
        SHOW,
    )
    .await
    .unwrap();
    let fleet_reason = page
        .eval(&text_of(
            "#fleet-agents tbody tr[data-node-id=\"a1\"] .reason",
        ))
        .await
        .unwrap();
    assert!(
        fleet_reason.as_str().unwrap_or_default().contains(&reason),
        "{fleet_reason}"
    );
    screenshot(&page, "fleet-nack").await;

    // The second change's diff, as `portico diff` shows one.
    show(&page, "history").await;
    let row = format!("#history-entries tbody tr[data-revision=\"{second}\"]");
    page.wait_for(
        &format!("!!document.querySelector({row:?})"),
        "the second change in the history",
        SHOW,
    )
    .await
    .unwrap();
    page.click(&row).await.unwrap();
    let diff = page
        .wait_for(
            &format!(
                "[document.querySelector('#history-diff[data-revision=\"{second}\"] pre')?.textContent]\
                   .find(t => t?.includes('+++')) ?? null"
            ),
            "the diff of the second change",
            SHOW,
        )
        .await
        .unwrap();
    let diff = diff.as_str().unwrap_or_default();
    assert!(
        diff.contains(&format!("+++ RouteTable/main (revision {second})")) && diff.contains("+"),
        "{diff}"
    );
    assert!(diff.contains("v1") && diff.contains("v2"), "{diff}");
    let rollback = page
        .eval(&format!(
            "!!document.querySelector('button.rollback[data-revision=\"{first}\"]')"
        ))
        .await
        .unwrap();
    assert_eq!(
        rollback, true,
        "authentication off: every caller may roll back"
    );
    screenshot(&page, "history").await;
    for view in ["traffic", "health"] {
        show(&page, view).await;
        screenshot(&page, view).await;
    }

    // A canary rollout to a2, held for the operator: the rollout page shows its stage.
    show(&page, "rollout").await;
    let path = files.write("canary.yaml", &config(&ports, "v3", ""));
    cp.portico(&["apply", "-f", &path, "--canary", "node=a2", "--manual"])
        .ok();
    page.wait_for(
        "document.querySelector('#rollout-canary')?.dataset.stage === 'BAKING' && \
         document.querySelectorAll('#rollout-gates tr[data-gate]').length > 0",
        "the canary rollout baking on the rollout page",
        SHOW,
    )
    .await
    .unwrap();
    screenshot(&page, "rollout-canary").await;
    cp.portico(&["rollout", "abort"]).ok();
    page.wait_for(
        "document.querySelector('#rollout-canary')?.dataset.stage === 'ABORTED'",
        "the aborted canary rollout on the rollout page",
        SHOW,
    )
    .await
    .unwrap();
    assert_eq!(page.errors(), Vec::<String>::new(), "the page's errors");
}

/// Logs in on the page's form with `token`.
async fn log_in(page: &Page, token: &str) {
    page.wait_for(
        "document.querySelector('#login') && !document.querySelector('#login').hidden && \
         getComputedStyle(document.querySelector('#login')).display !== 'none'",
        "the login form",
        SHOW,
    )
    .await
    .unwrap();
    page.type_into("#login-token", token).await.unwrap();
    page.click("#login-submit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_the_page_asks_for_a_token_and_keeps_it_from_script_and_url() {
    let cp = ControlPlane::embedded_with(|o| o.auth_on().with_web());
    assert!(
        cp.web_url().starts_with("https://"),
        "TLS like the gRPC API"
    );
    let files = Files::new();
    let ports = [free_port()];
    let first = cp.apply_text(&files, &config(&ports, "v1", ""), &[]);
    cp.apply_text(&files, &config(&ports, "v2", ""), &[]);
    let viewer = cp.create_token("viewer", "dash-viewer");
    let operator = cp.create_token("operator", "dash-operator");

    // The control plane's own CA is not among the browser's.
    let browser = Browser::launch_with(&["--ignore-certificate-errors"])
        .await
        .unwrap();
    let page = browser.new_page().await.unwrap();
    page.goto(&format!("{}/#/history", cp.web_url()))
        .await
        .unwrap();

    log_in(&page, "pt_not-a-token").await;
    let refused = page
        .wait_for(
            &text_of("#login-error"),
            "the refusal of a wrong token",
            SHOW,
        )
        .await
        .unwrap();
    assert!(
        refused
            .as_str()
            .unwrap_or_default()
            .contains("unknown or revoked token"),
        "{refused}"
    );

    log_in(&page, &viewer).await;
    page.wait_for(
        &format!("{} === 'dash-viewer (viewer)'", text_of("#whoami")),
        "the viewer logged in",
        SHOW,
    )
    .await
    .unwrap();
    show(&page, "history").await;
    page.wait_for(
        &format!(
            "!!document.querySelector('#history-entries tbody tr[data-revision=\"{first}\"]')"
        ),
        "the history as a viewer",
        SHOW,
    )
    .await
    .unwrap();
    let buttons = page
        .eval("document.querySelectorAll('button.rollback').length")
        .await
        .unwrap();
    assert_eq!(buttons, 0, "a viewer gets no rollback button");
    screenshot(&page, "history-viewer").await;

    // The token is in an HttpOnly cookie: not in the page's reach, storage or address.
    let exposed = page
        .eval(&format!(
            "[document.cookie, location.href, localStorage.length, sessionStorage.length, \
                  document.documentElement.outerHTML.includes({viewer:?}), \
                  document.querySelector('#login-token').value]"
        ))
        .await
        .unwrap();
    assert_eq!(exposed[0], "", "{exposed}");
    assert!(
        !exposed[1].as_str().unwrap_or_default().contains("pt_"),
        "{exposed}"
    );
    assert_eq!(exposed[2], 0, "{exposed}");
    assert_eq!(exposed[3], 0, "{exposed}");
    assert_eq!(exposed[4], false, "{exposed}");
    assert_eq!(exposed[5], "", "the form forgets the token: {exposed}");
    // Calls without the cookie, or without the page's header, are refused.
    let statuses = page
        .eval(
            "Promise.all([\
               fetch('/api/v1/Fleet', {method: 'POST', credentials: 'omit', \
                 headers: {'X-Portico-Request': '1'}, body: '{}'}).then(r => r.status),\
               fetch('/api/v1/Fleet', {method: 'POST', body: '{}'}).then(r => r.status),\
               fetch('/api/v1/CreateToken', {method: 'POST', \
                 headers: {'X-Portico-Request': '1'}, body: '{}'}).then(r => r.status),\
             ])",
        )
        .await
        .unwrap();
    assert_eq!(statuses, serde_json::json!([401, 403, 404]));

    // An operator may roll back.
    page.click("#logout").await.unwrap();
    log_in(&page, &operator).await;
    page.wait_for(
        &format!("{} === 'dash-operator (operator)'", text_of("#whoami")),
        "the operator logged in",
        SHOW,
    )
    .await
    .unwrap();
    show(&page, "history").await;
    page.wait_for(
        &format!("!!document.querySelector('button.rollback[data-revision=\"{first}\"]')"),
        "the rollback button for an operator",
        SHOW,
    )
    .await
    .unwrap();
    page.click(&format!("button.rollback[data-revision=\"{first}\"]"))
        .await
        .unwrap();
    page.type_into("#rollback-message", "back to v1 from the dashboard")
        .await
        .unwrap();
    page.click("#rollback-go").await.unwrap();
    let result = page
        .wait_for(&text_of("#rollback-result"), "the rollback's answer", SHOW)
        .await
        .unwrap();
    let history = cp
        .portico(&["-o", "json", "history", "--limit", "1"])
        .ok()
        .json();
    let newest = &history["entries"][0];
    assert_eq!(newest["rollback_of"], first, "{history}");
    assert_eq!(newest["author"], "dash-operator", "{history}");
    assert_eq!(
        newest["message"], "back to v1 from the dashboard",
        "{history}"
    );
    let revision = newest["revision"].as_i64().unwrap_or_default().to_string();
    assert!(
        result.as_str().unwrap_or_default().contains(&revision),
        "{result}"
    );
    assert_eq!(page.errors(), Vec::<String>::new(), "the page's errors");
}
