//! The relocatable release and its deployment: the tarball unpacked into a
//! fresh directory, with `HOME` an empty directory and no `LIBTORCH` or
//! `LD_LIBRARY_PATH`, runs `bin/mop demo` and `bin/flight-server`, whose
//! health a Python gRPC client reads; rolled out by its own `rollout.sh`
//! over ssh and scp (to an sshd of the test's own on 127.0.0.20 and
//! 127.0.0.21, each "host" laid out under a scratch root), the command
//! lines of its systemd units start a flight-server and a trainer that
//! report SERVING; the units pass `systemd-analyze verify`;
//! `rollout.sh --dry-run` gives every host of a host file its commands
//! once.
//!
//! The tarball is `HOPPER_PACKAGE` when set (what `scripts/package.sh`
//! made with a release build), else `scripts/package.sh --binaries` over
//! the binaries this test run built: the same packaging, checks and
//! layout without a second, release compile of the workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hopper_tests::{binary, cluster, free_port, free_ports, python_json, ChildGuard};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The release tarball under test, and (when made here) its directory.
fn tarball() -> (PathBuf, Option<tempfile::TempDir>) {
    if let Some(path) = std::env::var_os("HOPPER_PACKAGE") {
        return (PathBuf::from(path), None);
    }
    let bin_dir = binary("mop").unwrap().parent().unwrap().to_path_buf();
    let out = tempfile::tempdir().unwrap();
    let made = Command::new(root().join("scripts/package.sh"))
        .arg("--binaries")
        .arg(&bin_dir)
        .arg("--out")
        .arg(out.path())
        .arg("--fast")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(made.status.success(), "scripts/package.sh failed");
    let path = String::from_utf8(made.stdout).unwrap().trim().to_string();
    (PathBuf::from(path), Some(out))
}

/// A command that sees nothing of this machine's set-up: a `HOME` that is
/// an empty directory, no `LIBTORCH`, `LD_LIBRARY_PATH`, `HOPPER_*` or cargo
/// variables; only a system `PATH`.
fn bare(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(Stdio::null());
    cmd
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one top directory of the unpacked release.
fn unpack(tarball: &Path, into: &Path) -> PathBuf {
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    ok("tar -xzf", &out);
    let mut tops: Vec<PathBuf> = std::fs::read_dir(into)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tops.len(), 1, "one top directory: {tops:?}");
    tops.pop().unwrap()
}

/// Follows the gRPC health Watch of `address` until it reports SERVING.
fn serving(address: &str, service: &str) {
    let out = python_json(
        "health_probe.py",
        &[&"watch", &address, &service, &"SERVING", &"120"],
        &[],
    );
    assert_eq!(out["reached"], true, "{address} {service:?}: {out}");
}

/// `KEY=VALUE` lines of an environment file (comments and blanks skipped).
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The unit's `ExecStart=` expanded as systemd does for instance `port`
/// with `env`: `%i`, `${VAR}` as one word, `$VAR` split on spaces; paths
/// under `/opt/hopper/current` and `/etc/hopper` moved under `root`.
fn exec_start(unit: &Path, port: u16, env: &[(String, String)], root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} is not in the environment file"))
    };
    let mut argv = Vec::new();
    for word in line.replace("%i", &port.to_string()).split(' ') {
        if let Some(var) = word.strip_prefix('$').filter(|w| !w.starts_with('{')) {
            argv.extend(
                get(var)
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(String::from),
            );
            continue;
        }
        let mut w = word.to_string();
        while let Some(start) = w.find("${") {
            let end = w[start..].find('}').unwrap() + start;
            let value = get(&w[start + 2..end]);
            w.replace_range(start..=end, &value);
        }
        argv.push(w);
    }
    let root = root.display().to_string();
    argv.into_iter()
        .map(|a| {
            a.replace("/opt/hopper/", &format!("{root}/opt/hopper/"))
                .replace("/etc/hopper/", &format!("{root}/etc/hopper/"))
        })
        .collect()
}

/// Spawns `argv` bare and waits for its first stdout line.
fn spawn_bare(argv: &[String], home: &Path, env: &[(&str, &str)]) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut cmd = bare(Path::new(&argv[0]), home);
    let mut child = cmd
        .args(&argv[1..])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard::new(argv[0].clone(), child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    (guard, line)
}

/// An sshd of the test's own, on a free port of the given addresses,
/// taking root with a key made here: the "segment hosts" rollout.sh logs
/// in to. Stopped when dropped.
struct Sshd {
    _process: ChildGuard,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    fn start(dir: &Path, addresses: &[&str]) -> Sshd {
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["host_key", "client_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(name))
                .output()
                .expect("ssh-keygen (Debian's openssh-client)");
            ok("ssh-keygen", &out);
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port(addresses[0]);
        let mut config = format!(
            "Port {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n\
             PidFile {d}/sshd.pid\nSubsystem sftp internal-sftp\n",
            d = dir.display()
        );
        for a in addresses {
            config.push_str(&format!("ListenAddress {a}\n"));
        }
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (Debian's openssh-server)");
        let process = ChildGuard::new("sshd", child);
        // Listening once every address takes a connection.
        for a in addresses {
            let mut tries = 0;
            while std::net::TcpStream::connect((*a, port)).is_err() {
                tries += 1;
                assert!(tries < 200, "sshd does not listen on {a}:{port}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Sshd {
            _process: process,
            port,
            key: dir.join("client_key"),
        }
    }

    /// The ssh and scp options that reach it.
    fn options(&self) -> Vec<String> {
        vec![
            format!("-oPort={}", self.port),
            format!("-i{}", self.key.display()),
            "-oStrictHostKeyChecking=no".into(),
            "-oUserKnownHostsFile=/dev/null".into(),
            "-oLogLevel=ERROR".into(),
        ]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_release_runs_unpacked_anywhere_and_installs_as_services() {
    let (tarball, _made) = tarball();
    let name = tarball.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("hopper-") && name.contains("-linux-x86_64") && name.ends_with(".tar.gz"),
        "{name}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&unpacked).unwrap();
    // Searchable by the unprivileged user PostgreSQL runs as under root.
    for dir in [tmp.path(), &home, &unpacked] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let release = unpack(&tarball, &unpacked);
    for file in [
        "bin/flight-server",
        "bin/mop",
        "lib/libtorch_cpu.so",
        "systemd/flight-server@.service",
        "systemd/mop-trainer@.service",
        "greenplum/rollout.sh",
        "greenplum/install-host.sh",
        "docs/deploy.md",
        "examples/criteo.toml",
        "LICENSE",
        "README.md",
    ] {
        assert!(release.join(file).is_file(), "the release has {file}");
    }

    // flight-server needs no libtorch; mop finds it in lib/.
    let ldd = |bin: &str| {
        let out = bare(Path::new("/usr/bin/ldd"), &home)
            .arg(release.join(bin))
            .output()
            .unwrap();
        ok("ldd", &out)
    };
    let flight_libs = ldd("bin/flight-server");
    assert!(!flight_libs.contains("libtorch"), "{flight_libs}");
    let mop_libs = ldd("bin/mop");
    let lib = std::fs::canonicalize(release.join("lib")).unwrap();
    // `libtorch_cpu.so => /…/bin/../lib/libtorch_cpu.so (0x…)`
    let torch = mop_libs
        .lines()
        .find(|l| l.trim_start().starts_with("libtorch_cpu.so"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("mop links libtorch_cpu: {mop_libs}"));
    let found = std::fs::canonicalize(torch).unwrap();
    assert_eq!(found.parent(), Some(lib.as_path()), "from lib/: {torch}");
    assert!(!mop_libs.contains("not found"), "{mop_libs}");

    let help = bare(&release.join("bin/flight-server"), &home)
        .arg("--help")
        .output()
        .unwrap();
    assert!(ok("flight-server --help", &help).contains("--segment"));

    // The demo from the release alone: local segments, its own
    // flight-server and trainers, 16 models.
    let demo_dir = tmp.path().join("demo");
    let demo = bare(&release.join("bin/mop"), &home)
        .current_dir(tmp.path())
        .args(["demo", "--rows", "2000", "--epochs", "1", "--segments", "2"])
        .args(["--progress", "quiet", "--dir"])
        .arg(&demo_dir)
        .output()
        .unwrap();
    ok("bin/mop demo", &demo);
    let results: Value =
        serde_json::from_slice(&std::fs::read(demo_dir.join("results.json")).unwrap()).unwrap();
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 16);
    assert!(
        models.iter().all(|m| m["val_acc"][0].is_f64()),
        "{models:?}"
    );
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "nothing written to HOME"
    );

    // Rolled out by the release's own rollout.sh over ssh to two "hosts"
    // (127.0.0.20 and 127.0.0.21: an sshd of the test's own), each laid out
    // under a scratch root of its own (the services are not started: there
    // is no systemd here).
    let db = cluster(1).await.unwrap();
    let sshd = Sshd::start(tmp.path(), &["127.0.0.20", "127.0.0.21"]);
    let admin = tmp.path().join("admin");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::write(admin.join("hostfile"), "127.0.0.20\n127.0.0.21\n").unwrap();
    std::fs::write(
        admin.join("ticket.key"),
        b"package-test ticket key, 32 bytes or more",
    )
    .unwrap();
    let [flight_port, trainer_port] = free_ports::<2>("127.0.0.20");
    let coordinator = format!("postgresql://127.0.0.1:{}/hopper", db.port(0));
    let hosts = tmp.path().join("hosts");
    let rolled = Command::new(release.join("greenplum/rollout.sh"))
        .current_dir(&admin)
        .arg("--release")
        .arg(&tarball)
        .args([
            "--greenplum",
            &coordinator,
            "--trainers",
            "1",
            "--threads",
            "1",
        ])
        .args(["--port", &flight_port.to_string()])
        .args(["--trainer-port", &trainer_port.to_string()])
        .args(["--flight-args", "--max-connections 4", "--sudo", ""])
        .arg("--root")
        .arg(hosts.join("%h"))
        .args(
            sshd.options()
                .iter()
                .flat_map(|o| ["--ssh-opt", o.as_str()]),
        )
        .arg("hostfile")
        .output()
        .unwrap();
    ok("rollout.sh", &rolled);
    let said = String::from_utf8_lossy(&rolled.stderr);
    assert!(said.contains("made the trainer key"), "{said}");
    for host in ["127.0.0.20", "127.0.0.21"] {
        let log = std::fs::read_to_string(admin.join(format!("rollout-logs/{host}.log"))).unwrap();
        assert!(log.contains("installed, not started"), "{host}: {log}");
        assert_eq!(
            std::fs::read(hosts.join(host).join("etc/hopper/trainer.key")).unwrap(),
            std::fs::read(admin.join("trainer.key")).unwrap(),
            "{host} has the trainer key"
        );
    }
    // No copy of a key is left in a host's temporary directory.
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hopper-rollout-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(sshd);
    let host_root = hosts.join("127.0.0.20");
    let keys = admin.clone();
    let etc = host_root.join("etc/hopper");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&etc.join("ticket.key")), 0o640);
        assert_eq!(mode(&etc.join("trainer.key")), 0o640);
        assert_eq!(mode(&etc), 0o750);
    }
    assert_eq!(
        std::fs::read(etc.join("ticket.key")).unwrap(),
        std::fs::read(keys.join("ticket.key")).unwrap()
    );
    let flight_env = env_file(&etc.join(format!("{flight_port}.env")));
    let args = &flight_env
        .iter()
        .find(|(k, _)| k == "HOPPER_FLIGHT_ARGS")
        .unwrap()
        .1;
    assert!(
        args.contains(&format!("--segment-flight-port {flight_port}"))
            && args.contains(&format!("--advertise grpc+tcp://127.0.0.20:{flight_port}"))
            && args.contains("--auth database")
            && args.ends_with("--max-connections 4"),
        "{args}"
    );
    let units = host_root.join("etc/systemd/system");
    let current = host_root.join("opt/hopper/current");
    assert!(current.join("bin/flight-server").is_file());

    // The units are valid for systemd, with this root's paths.
    for (unit, port) in [
        ("flight-server@.service", flight_port),
        ("mop-trainer@.service", trainer_port),
    ] {
        let text = std::fs::read_to_string(units.join(unit))
            .unwrap()
            .replace(
                "/opt/hopper/",
                &format!("{}/opt/hopper/", host_root.display()),
            )
            .replace("/etc/hopper/", &format!("{}/", etc.display()));
        let instance = tmp.path().join(unit.replace('@', &format!("@{port}")));
        std::fs::write(&instance, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&instance)
            .output()
            .expect("systemd-analyze (Debian's systemd package) checks the units");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // What systemd would run, run bare: a flight-server on the host's
    // address over the database, and a trainer; both report SERVING.
    let mut flight_env = flight_env;
    flight_env.retain(|(k, _)| k != "HOPPER_BIND_HOST");
    flight_env.push(("HOPPER_BIND_HOST".into(), "127.0.0.20".into()));
    let argv = exec_start(
        &units.join("flight-server@.service"),
        flight_port,
        &flight_env,
        &host_root,
    );
    let (_server, line) = spawn_bare(&argv, &home, &[]);
    assert_eq!(
        line.trim(),
        format!("flight-server listening on grpc+tcp://127.0.0.20:{flight_port}")
    );
    serving(&format!("127.0.0.20:{flight_port}"), "");

    let mut trainer_env = env_file(&etc.join(format!("{trainer_port}.env")));
    trainer_env.retain(|(k, _)| k != "HOPPER_BIND_HOST");
    trainer_env.push(("HOPPER_BIND_HOST".into(), "127.0.0.20".into()));
    let argv = exec_start(
        &units.join("mop-trainer@.service"),
        trainer_port,
        &trainer_env,
        &host_root,
    );
    let key = etc.join("trainer.key").display().to_string();
    let (_trainer, line) = spawn_bare(&argv, &home, &[("HOPPER_TRAINER_KEY_FILE", &key)]);
    assert!(
        line.contains(&format!("127.0.0.20:{trainer_port}")),
        "{line}"
    );
    serving(&format!("127.0.0.20:{trainer_port}"), "hopper.v1.Trainer");
}

#[test]
fn rollout_dry_run_gives_every_host_its_commands_once_on_the_port_convention() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hostfile");
    std::fs::write(
        &hosts,
        "# segment hosts\n127.0.0.20\n\n127.0.0.21  # sdw2\n127.0.0.20\n",
    )
    .unwrap();
    let release = tmp.path().join("hopper-0.0.0-linux-x86_64.tar.gz");
    std::fs::write(&release, b"").unwrap();
    let rollout = root().join("deploy/greenplum/rollout.sh");
    let run = |extra: &[&str]| {
        Command::new(&rollout)
            .current_dir(tmp.path())
            .arg("--release")
            .arg(&release)
            .args(extra)
            .arg(&hosts)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--dry-run",
        "--greenplum",
        "postgresql://mdw:5432/warehouse",
        "--trainers",
        "2",
    ]);
    let plan = ok("rollout.sh --dry-run", &out);
    let lines: Vec<&str> = plan.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 6, "three commands per host, once: {plan}");
    for (i, host) in ["127.0.0.20", "127.0.0.21"].iter().enumerate() {
        let [mkdir, scp, install] = [lines[3 * i], lines[3 * i + 1], lines[3 * i + 2]];
        assert!(mkdir.starts_with(&format!("ssh -oBatchMode=yes {host} mkdir\\ -m\\ 0700")));
        assert!(scp.starts_with("scp ") && scp.contains(&format!(" {host}:/tmp/hopper-rollout-")));
        assert!(
            scp.contains("ticket.key") && scp.contains("trainer.key"),
            "{scp}"
        );
        for word in [
            format!("--host\\ {host}"),
            "--port\\ 50051".into(),
            "--trainers\\ 2".into(),
            "--greenplum\\ postgresql://mdw:5432/warehouse".into(),
            "rm\\ -rf\\ /tmp/hopper-rollout-".into(),
        ] {
            assert!(install.contains(&word), "{word} in {install}");
        }
    }
    // A dry run makes no key and copies nothing.
    assert!(!tmp.path().join("ticket.key").exists());
    assert!(plan.contains("would make the ticket key"));

    // A coordinator URL with a login is refused before any host is touched.
    let out = run(&["--dry-run", "--greenplum", "postgresql://gpadmin:pw@mdw/w"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no user or password"), "{said}");
    assert!(out.stdout.is_empty(), "nothing planned");
}

#[test]
fn the_deployment_scripts_pass_shellcheck() {
    let out = Command::new("shellcheck")
        .current_dir(root())
        .args([
            "scripts/package.sh",
            "deploy/greenplum/rollout.sh",
            "deploy/greenplum/install-host.sh",
        ])
        .output()
        .expect("shellcheck (Debian's package; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
