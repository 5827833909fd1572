//! Configuration: flags > environment > file > defaults, help, and errors.

use std::process::Command;

use crate::util::*;

fn roomcast(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn shard_count(server: &Server) -> usize {
    let (_, body) = get(server, "/metrics");
    body.lines()
        .filter(|l| l.starts_with("roomcast_shard_connections{"))
        .count()
}

#[test]
fn help_documents_every_option_with_its_default() {
    let out = roomcast(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, default) in [
        ("--listen", "127.0.0.1:8080"),
        ("--shards", "number of CPUs"),
        ("--heartbeat-secs", "30"),
        ("--max-message-bytes", "65536"),
        ("--max-connections", "open-file limit"),
        ("--max-queue-bytes", "1048576"),
        ("--handshake-timeout-secs", "10"),
        ("--close-timeout-secs", "5"),
        ("--jwt-algorithm", "HS256 with a secret"),
        ("--jwt-leeway-secs", "30"),
        ("--rate-limit", "100"),
        ("--rate-burst", "2 x --rate-limit"),
        ("--max-rooms-per-connection", "1024"),
        ("--stats-interval-secs", "60"),
        ("--shutdown-timeout-secs", "10"),
        ("--log-format", "text"),
        ("--redis-url", "none"),
        ("--redis-cluster-nodes", "none"),
        ("--redis-prefix", "roomcast"),
        ("--redis-buffer-messages", "10000"),
        ("--log-level", "info"),
    ] {
        let line = help
            .lines()
            .skip_while(|l| !l.contains(flag))
            .take(3)
            .collect::<String>();
        assert!(line.contains(&format!("[default: {default}")), "{flag}: {line}");
        let env = format!("ROOMCAST_{}", flag[2..].to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "{env} missing from help");
    }
    assert!(help.contains("--config"));
    assert!(help.contains("--jwt-secret") && help.contains("--jwt-public-key"));
}

#[test]
fn invalid_values_exit_nonzero_with_one_line() {
    for (args, env, needle) in [
        (vec!["--shards", "zero"], vec![], "--shards"),
        (vec!["--shards", "0"], vec![], "--shards"),
        (vec!["--listen", "nowhere"], vec![], "--listen"),
        (
            vec![],
            vec![("ROOMCAST_HEARTBEAT_SECS", "-1")],
            "ROOMCAST_HEARTBEAT_SECS",
        ),
        (
            vec!["--config", "/nonexistent/roomcast.toml"],
            vec![],
            "/nonexistent/roomcast.toml",
        ),
    ] {
        let out = roomcast(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("roomcast-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "shards = 2\nnot-an-option = 1\n").unwrap();
    let out = roomcast(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 2") && err.contains("not-an-option"), "{err}");
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = std::env::temp_dir().join(format!("roomcast-test-prec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.toml");
    std::fs::write(&path, "shards = 4\n").unwrap();
    let file = path.to_str().unwrap();

    let server = Server::start(&["--config", file]);
    assert_eq!(shard_count(&server), 4, "file over default");
    let server = Server::start_with_env(&["--config", file], &[("ROOMCAST_SHARDS", "3")]);
    assert_eq!(shard_count(&server), 3, "env over file");
    let server = Server::start_with_env(&["--config", file, "--shards", "2"], &[("ROOMCAST_SHARDS", "3")]);
    assert_eq!(shard_count(&server), 2, "flag over env");
}

#[test]
fn listening_elsewhere_than_configured_fails_clearly() {
    // Take a port, then ask roomcast for the same one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = roomcast(&["--listen", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot listen on") && err.contains(&addr), "{err}");
}

/// Issue 18: an error says where the bad value came from, lists the valid
/// values, and keeps clap's suggestion for a typo.
#[test]
fn errors_name_the_flag_the_variable_or_the_file() {
    let path = temp_file("roomcast.toml", "shards = 0\n");
    let file = path.as_str();
    let in_file = format!("shards in {file} must be greater than 0");
    for (args, env, needle) in [
        (vec!["--shards", "0"], vec![], "--shards must be greater than 0"),
        (
            vec![],
            vec![("ROOMCAST_SHARDS", "0")],
            "ROOMCAST_SHARDS must be greater than 0",
        ),
        (vec!["--config", file], vec![], in_file.as_str()),
        (
            vec!["--config", file, "--shards", "0"],
            vec![],
            "--shards must be greater than 0",
        ),
        (vec!["--demo", "maybe"], vec![], "[possible values: true, false]"),
        (
            vec![],
            vec![("ROOMCAST_ECHO", "x")],
            "ROOMCAST_ECHO [possible values: true, false]",
        ),
        (vec!["--shard", "2"], vec![], "a similar argument exists: '--shards'"),
        (
            vec!["--max-message-bytes", "10"],
            vec![],
            "--max-message-bytes must be at least 256",
        ),
        (
            vec!["--listen", "no-such-host.invalid:80"],
            vec![],
            "--listen: cannot use",
        ),
    ] {
        let out = roomcast(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
    }
}

/// Issue 18: `--listen localhost:PORT` works, and the log says what it
/// resolved to.
#[test]
fn a_host_name_to_listen_on_is_resolved() {
    let (server, logs) = Server::start_logged(&["--listen", "localhost:0", "--log-level", "info"]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(get(&server, "/healthz").0, 200);
    let line = logs
        .iter()
        .find(|l| l.contains("resolved to"))
        .expect("a log line says what localhost resolved to");
    assert!(line.contains("--listen localhost:0"), "{line}");
}

/// Issue 18: what `--print-config` writes starts the same broker again,
/// and machine-derived defaults stay defaults (comments).
#[test]
fn print_config_round_trips_and_leaves_machine_defaults_unset() {
    let dir = std::env::temp_dir().join(format!("roomcast-test-print-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = roomcast(
        &[
            "--print-config",
            "--heartbeat-secs",
            "7",
            "--presence",
            "--history-size",
            "5",
        ],
        &[],
    );
    assert!(first.status.success());
    let text = String::from_utf8(first.stdout).unwrap();
    for key in ["shards", "max-connections", "rate-burst"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "{key} as a comment:\n{text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{key} not set:\n{text}"
        );
    }
    let path = dir.join("printed.toml");
    std::fs::write(&path, &text).unwrap();
    let again = roomcast(&["--print-config", "--config", path.to_str().unwrap()], &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text, "the same configuration");
    // Set explicitly, they are written as values.
    let set = roomcast(&["--print-config", "--shards", "3"], &[]);
    assert!(String::from_utf8(set.stdout)
        .unwrap()
        .lines()
        .any(|l| l == "shards = 3"));
}

/// Issue 18: the README's TOML example starts as it is (with a key, since
/// it listens on every address).
#[test]
fn the_readme_toml_example_starts() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n# roomcast.toml").expect("the example") + "```toml\n".len();
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = std::env::temp_dir().join(format!("roomcast-test-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("roomcast.toml");
    std::fs::write(&path, example).unwrap();
    let out = roomcast(&["--print-config", "--config", path.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And it serves (on a free port instead of the example's 8080).
    let server = Server::start(&["--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(get(&server, "/healthz").0, 200);

    // So does operations.md's production file, with its secret from the
    // environment as the systemd unit gives it.
    let ops = include_str!("../../docs/operations.md");
    let start = ops.find("```toml\n# /etc/roomcast/roomcast.toml").expect("the example") + "```toml\n".len();
    let example = &ops[start..start + ops[start..].find("```").unwrap()];
    let path = dir.join("production.toml");
    std::fs::write(&path, example).unwrap();
    let secret = [("ROOMCAST_JWT_SECRET", "a-secret-of-at-least-32-bytes-long")];
    let out = roomcast(&["--print-config", "--config", path.to_str().unwrap()], &secret);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
