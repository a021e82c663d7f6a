//! The Infrastructure client against a mock HTTP server (wiremock on
//! loopback): the request we send, and how each kind of answer is read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisioning::join::infra::{InfraClient, InfraError, Registered, Registration, ServerTypeId};
use provisioning::join::retry::{AttemptOutcome, Backoff, GiveUpReason};
use provisioning::secrets::{SecretString, Token};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn registration() -> Registration {
    Registration {
        hostname: "pve-02".into(),
        management_ip: "192.0.2.12".parse().unwrap(),
        mac: "52:54:00:00:00:02".into(),
        hardware_id: "0b5e1a57-1d2c-4e3f-8a9b-0c1d2e3f4a5b".into(),
        server_type_id: ServerTypeId::Number(7),
    }
}

fn fast() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    }
}

fn client(server: &MockServer, token: &Token, timeout: Duration) -> InfraClient {
    InfraClient::new(
        &server.uri(),
        Some(SecretString::new(token.expose())),
        timeout,
    )
    .unwrap()
    .with_backoff(fast())
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One global capture for the binary (see tests/join_ssh.rs for why).
fn captured_logs() -> String {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    let c = CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    });
    String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn registers_with_put_json_and_bearer_token() {
    captured_logs();
    let server = MockServer::start().await;
    let token = Token::generate().unwrap();
    Mock::given(method("PUT"))
        .and(path("/api/v1/servers/pve-02"))
        .and(header(
            "authorization",
            format!("Bearer {}", token.expose()).as_str(),
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(serde_json::json!({
            "hostname": "pve-02",
            "management_ip": "192.0.2.12",
            "mac": "52:54:00:00:00:02",
            "hardware_id": "0b5e1a57-1d2c-4e3f-8a9b-0c1d2e3f4a5b",
            "server_type_id": 7
        })))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &token, Duration::from_secs(5));
    let mut attempts = Vec::new();
    let r = c
        .register_with_retry(
            &registration(),
            Instant::now() + Duration::from_secs(10),
            |a| attempts.push(a.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r, Registered::Created { status: 201 });
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::Succeeded);
    let logs = captured_logs();
    assert!(logs.contains("registered with infrastructure"), "{logs}");
    assert!(!logs.contains(token.expose()), "token in logs");
}

#[tokio::test]
async fn conflict_or_exists_body_means_already_registered() {
    captured_logs();
    let server = MockServer::start().await;
    let token = Token::generate().unwrap();
    Mock::given(method("PUT"))
        .and(path("/api/v1/servers/pve-02"))
        .respond_with(ResponseTemplate::new(409).set_body_string("conflict"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/servers/pve-03"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(serde_json::json!({"error": "server already exists"})),
        )
        .mount(&server)
        .await;
    let c = client(&server, &token, Duration::from_secs(5));
    assert_eq!(
        c.register(&registration()).await.unwrap(),
        Registered::AlreadyRegistered { status: 409 }
    );
    let mut other = registration();
    other.hostname = "pve-03".into();
    assert_eq!(
        c.register(&other).await.unwrap(),
        Registered::AlreadyRegistered { status: 422 }
    );
}

#[tokio::test]
async fn server_error_is_retried_until_success() {
    captured_logs();
    let server = MockServer::start().await;
    let token = Token::generate().unwrap();
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &token, Duration::from_secs(5));
    let mut attempts = Vec::new();
    let r = c
        .register_with_retry(
            &registration(),
            Instant::now() + Duration::from_secs(20),
            |a| attempts.push(a.clone()),
        )
        .await
        .unwrap();
    assert_eq!(r, Registered::Created { status: 200 });
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    match &attempts[0].outcome {
        AttemptOutcome::WillRetry { error, retry_in } => {
            assert!(
                error.contains("500") && error.contains("database is down"),
                "{error}"
            );
            assert!(*retry_in <= Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn client_error_is_permanent_with_status_and_body_excerpt() {
    captured_logs();
    let server = MockServer::start().await;
    let token = Token::generate().unwrap();
    let long_body = format!("invalid server_type_id {}", "x".repeat(1000));
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(400).set_body_string(long_body))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &token, Duration::from_secs(5));
    let mut attempts = Vec::new();
    let err = c
        .register_with_retry(
            &registration(),
            Instant::now() + Duration::from_secs(20),
            |a| attempts.push(a.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, InfraError::Rejected { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("400") && msg.contains("invalid server_type_id"),
        "{msg}"
    );
    assert!(msg.len() < 400, "body excerpt not shortened: {msg}");
    assert_eq!(attempts.len(), 1);
    assert!(matches!(
        attempts[0].outcome,
        AttemptOutcome::GaveUp {
            reason: GiveUpReason::Permanent,
            ..
        }
    ));
}

#[tokio::test]
async fn timeout_is_retryable_and_retried_until_the_deadline() {
    captured_logs();
    let server = MockServer::start().await;
    let token = Token::generate().unwrap();
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let c = client(&server, &token, Duration::from_millis(300));
    let err = c.register(&registration()).await.unwrap_err();
    assert!(matches!(err, InfraError::Timeout(_)), "{err}");
    assert!(err.is_retryable());

    let started = Instant::now();
    let mut attempts = Vec::new();
    let err = c
        .register_with_retry(
            &registration(),
            Instant::now() + Duration::from_secs(2),
            |a| attempts.push(a.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, InfraError::Timeout(_)), "{err}");
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(matches!(
        attempts.last().unwrap().outcome,
        AttemptOutcome::GaveUp {
            reason: GiveUpReason::Deadline,
            ..
        }
    ));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn unreachable_service_is_retryable_and_never_shows_the_token() {
    captured_logs();
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = Token::generate().unwrap();
    let c = InfraClient::new(
        &format!("http://127.0.0.1:{port}"),
        Some(SecretString::new(token.expose())),
        Duration::from_secs(2),
    )
    .unwrap();
    let err = c.register(&registration()).await.unwrap_err();
    assert!(matches!(err, InfraError::Unreachable(_)), "{err}");
    assert!(err.is_retryable());
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{c:?}"),
        captured_logs(),
    ] {
        assert!(!text.contains(token.expose()), "token leaked: {text}");
    }
}
