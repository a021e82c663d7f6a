//! The SSH join against a real OpenSSH server: the test starts Debian's
//! `/usr/sbin/sshd` on a loopback port with its own host key, config and
//! `AuthorizedKeysFile` in a temporary directory (no system file is read for
//! authentication or touched), and a stand-in `pvecm`
//! (`tests/fixtures/join/pvecm`) that checks its arguments and the password
//! on stdin and rewires `authorized_keys` the way the real join does.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use provisioning::join::retry::{AttemptOutcome, Backoff};
use provisioning::join::ssh::{JoinError, join, join_with_retry};
use provisioning::secrets::{EphemeralKey, SecretString};
use support::sshd::{
    NODE, OTHER_KEY, PASSWORD, SshdHost as Host, assert_no_secrets, capture_tracing, fingerprint,
};

#[tokio::test(flavor = "current_thread")]
async fn join_succeeds_removes_the_key_everywhere_and_redacts_output() {
    let host = Host::started();
    let captured = capture_tracing();
    let report = join(&host.params())
        .await
        .unwrap_or_else(|e| panic!("join failed: {e}\nsshd log:\n{}", host.sshd_log()));

    assert!(!report.already_member);
    assert_eq!(report.summary(), "joined");
    assert_eq!(
        report.host_key_fingerprint,
        provisioning::secrets::fingerprint_sha256(&host.host_key_line).unwrap()
    );
    // pvecm ran exactly once, with exactly these arguments.
    assert_eq!(
        host.pvecm_calls().as_deref(),
        Some(format!("add {NODE} --fingerprint {}\n", fingerprint()).as_str())
    );
    let out = report.join_output.as_ref().unwrap();
    assert_eq!(out.exit_status, Some(0));
    assert!(out.stdout.contains("successfully added node"), "{out:?}");
    // The stand-in echoes the password it got: the report must not.
    assert!(
        out.stderr.contains("received password '<redacted>'"),
        "{out:?}"
    );
    assert!(!out.command.contains(PASSWORD));

    // The join made root's file a link to the cluster-wide file, and the key
    // is gone from both while every other key stayed.
    let node_keys = host.root().join("root/.ssh/authorized_keys");
    let cluster_keys = host.root().join("etc/pve/priv/authorized_keys");
    assert!(fs::symlink_metadata(&node_keys).unwrap().is_symlink());
    let contents = fs::read_to_string(&cluster_keys).unwrap();
    assert!(!contents.contains(&host.key_blob()), "{contents}");
    assert!(contents.contains(OTHER_KEY), "{contents}");
    assert!(contents.contains("root@existing-node"), "{contents}");
    assert_eq!(
        fs::metadata(&cluster_keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        report.key_removal_output.stdout.contains("removed:"),
        "{:?}",
        report.key_removal_output
    );

    // A fresh login with the key fails now (join verified it; check again).
    let again = join(&host.params()).await.unwrap_err();
    assert!(matches!(again, JoinError::AuthRejected { .. }), "{again}");
    assert!(!again.is_retryable());

    let logs = captured.text();
    assert!(logs.contains("pvecm add succeeded"), "{logs}");
    assert_no_secrets("the tracing output", &logs, &host);
    assert_no_secrets("the report", &format!("{report:?}"), &host);
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_pinned_host_key_is_a_permanent_mismatch_and_runs_nothing() {
    let host = Host::started();
    let mut params = host.params();
    let other = EphemeralKey::generate("someone-else").unwrap();
    params.pinned_host_keys = vec![other.public_openssh().to_string()];
    let err = join(&params).await.unwrap_err();
    assert!(matches!(err, JoinError::HostKeyMismatch { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("host key mismatch"), "{err}");
    assert!(host.pvecm_calls().is_none(), "pvecm must not run");
    // Nothing was removed either.
    let keys = fs::read_to_string(host.root().join("root/.ssh/authorized_keys")).unwrap();
    assert!(keys.contains(&host.key_blob()));

    // join_with_retry gives up at once instead of retrying until the deadline.
    let started = Instant::now();
    let mut attempts = Vec::new();
    let err = join_with_retry(&params, Instant::now() + Duration::from_secs(30), |a| {
        attempts.push(a.clone())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, JoinError::HostKeyMismatch { .. }));
    assert_eq!(attempts.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "current_thread")]
async fn sshd_down_then_up_is_retried_until_it_answers() {
    let mut host = Host::prepare();
    let mut params = host.params();
    params.backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
    };
    params.connect_timeout = Duration::from_secs(2);
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        host.start_sshd();
        host
    });
    let mut attempts = Vec::new();
    let result = join_with_retry(&params, Instant::now() + Duration::from_secs(60), |a| {
        attempts.push(a.clone())
    })
    .await;
    let host = starter.join().unwrap();
    let report = result.unwrap_or_else(|e| panic!("join failed: {e}\n{}", host.sshd_log()));
    assert!(!report.already_member);
    assert!(attempts.len() >= 2, "{attempts:?}");
    match &attempts[0].outcome {
        AttemptOutcome::WillRetry { error, .. } => {
            assert!(error.contains("cannot connect"), "{error}")
        }
        other => panic!("first attempt should be retried: {other:?}"),
    }
    assert_eq!(attempts.last().unwrap().outcome, AttemptOutcome::Succeeded);
    assert!(host.pvecm_calls().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn failing_pvecm_is_permanent_and_its_output_is_redacted() {
    let host = Host::started();
    let wrong = "wrong-password-do-not-leak";
    let mut params = host.params();
    params.join_password = SecretString::new(wrong);
    let captured = capture_tracing();
    let err = join(&params).await.unwrap_err();
    let JoinError::CommandFailed {
        status,
        ref output,
        ref details,
    } = err
    else {
        panic!("expected CommandFailed, got {err}");
    };
    assert_eq!(status, Some(255));
    assert!(output.contains("Authentication failed"), "{output}");
    assert!(output.contains("<redacted>"), "{output}");
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{details:?}"),
        captured.text(),
    ] {
        assert!(!text.contains(wrong), "password leaked: {text}");
        assert!(!text.contains(PASSWORD));
    }
    assert!(!err.is_retryable());
    // The key was not removed: the join did not happen, nothing to clean
    // up that a new rebuild would not replace.
    assert!(host.pvecm_calls().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn an_existing_member_is_not_joined_again_but_the_key_is_removed() {
    let host = Host::started();
    fs::create_dir_all(host.root().join("etc/pve/priv")).unwrap();
    fs::write(host.root().join("etc/pve/corosync.conf"), "").unwrap();
    let report = join(&host.params()).await.unwrap();
    assert!(report.already_member);
    assert_eq!(report.summary(), "already joined");
    assert!(report.join_output.is_none());
    assert!(host.pvecm_calls().is_none(), "pvecm must not run");
    let keys = fs::read_to_string(host.root().join("root/.ssh/authorized_keys")).unwrap();
    assert!(!keys.contains(&host.key_blob()), "{keys}");
    assert!(keys.contains(OTHER_KEY));
    let out = &report.key_removal_output;
    assert!(out.stdout.contains("absent:"), "{out:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn key_removal_failure_is_reported() {
    let host = Host::started();
    let mut params = host.params();
    // A directory where a file is expected: grep cannot read it.
    let bogus = host.root().join("bogus-authorized-keys");
    fs::create_dir_all(&bogus).unwrap();
    params.authorized_keys_paths = vec![
        params.authorized_keys_paths[0].clone(),
        bogus.display().to_string(),
    ];
    let err = join(&params).await.unwrap_err();
    assert!(matches!(err, JoinError::KeyRemovalFailed { .. }), "{err}");
    assert!(!err.is_retryable());
    let out = err.to_string();
    assert!(out.contains("cannot read"), "{out}");
}
