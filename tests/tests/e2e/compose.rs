//! docker-compose.yml cannot rot: every service's command uses flags the
//! built binaries accept (there is no Docker engine here to run it).

use hopper_tests::{binary, python_script};

#[test]
fn every_compose_command_uses_flags_the_binaries_accept() {
    let dir = binary("flight-server").unwrap();
    binary("mop").unwrap();
    let dir = dir.parent().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let compose = format!("{root}/docker-compose.yml");
    let out = python_script("check_compose.py", &[&compose, &dir], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The compose file's example run configuration parses too.
    let text = std::fs::read_to_string(format!("{root}/examples/compose.toml")).unwrap();
    mop_runner_config_parses(&text);
}

fn mop_runner_config_parses(text: &str) {
    // Parsed by the same code `mop train` uses.
    mop_core::run_config::RunConfig::parse(text).expect("examples/compose.toml");
}
