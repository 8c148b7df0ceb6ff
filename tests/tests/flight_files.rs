//! flight-server over files: a Parquet file written by pyarrow reads back
//! equal through Flight, partition by partition.

use hopper_tests::{python, FlightServer};

#[test]
fn a_parquet_file_written_by_pyarrow_reads_back_equal() {
    let py = python().expect("HOPPER_PYTHON is not set: run the tests through scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/parquet_roundtrip.py");
    let d = dir.path().to_str().unwrap();
    let status = std::process::Command::new(&py)
        .args([script, "write", d])
        .status()
        .unwrap();
    assert!(status.success());
    let server = FlightServer::start(&["--files", d, "--file-partitions", "3"]).unwrap();
    let out = std::process::Command::new(&py)
        .args([script, "check", d, &server.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "round trip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoints: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(endpoints, 3, "the file is read through 3 partitions");
}
