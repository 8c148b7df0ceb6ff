//! hopper end to end: one test binary (linking libtorch and DataFusion
//! once, not once per file), one module per capability, each over real
//! PostgreSQL or Greenplum, real flight-server and trainer processes, and
//! clients hopper did not write (pyarrow, ADBC).

mod auth;
mod bad_input;
mod binding;
mod bounds;
mod compose;
mod database_tls;
mod demo;
mod faults;
mod flight_files;
mod flight_postgres;
mod flight_put;
mod flight_sql;
mod greenplum;
mod health;
mod load;
mod login;
mod mlflow;
mod output_table;
mod package;
mod report;
mod search;
mod snapshots;
mod source_change;
mod table_input;
mod tasks;
mod threads;
mod torchscript;
mod trainer_auth;
mod training;
