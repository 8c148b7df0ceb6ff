//! flight-server over files: a Parquet file written by pyarrow reads back
//! equal through Flight, partition by partition, and through Flight SQL.

use hopper_tests::{python_json, python_script, FlightServer};

/// pyarrow writes `events.parquet` into a new directory, which a
/// flight-server serves in 3 partitions.
fn serve_a_parquet_file() -> (tempfile::TempDir, FlightServer) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = python_script("parquet_roundtrip.py", &[&"write", &d], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = FlightServer::start(&["--files", d, "--file-partitions", "3"]).unwrap();
    (dir, server)
}

#[test]
fn a_parquet_file_written_by_pyarrow_reads_back_equal() {
    let (dir, server) = serve_a_parquet_file();
    let d = dir.path().to_str().unwrap();
    let out = python_script("parquet_roundtrip.py", &[&"check", &d, &server.url], &[]);
    assert!(
        out.status.success(),
        "round trip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoints: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(endpoints, 3, "the file is read through 3 partitions");
}

#[test]
fn adbc_flight_sql_reads_a_file_partition_by_partition_with_a_bound_parameter() {
    let (dir, server) = serve_a_parquet_file();
    let uri = server.url.replace("grpc+tcp://", "grpc://");
    let ipc = dir.path().join("read.arrow");
    let sql = "SELECT id, name FROM events WHERE id < $1";
    let read = python_json(
        "adbc_read_to_ipc.py",
        &[&uri, &"-", &"UNUSED", &sql, &ipc, &"1234"],
        &[],
    );
    assert_eq!(read["partitions"], 3, "{read}");
    let file = std::fs::File::open(&ipc).unwrap();
    let mut ids: Vec<i64> = arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .flat_map(|b| {
            let b = b.unwrap();
            let id = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .clone();
            id.values().to_vec()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (0..1234).collect::<Vec<i64>>());
}
