//! `GetXdbcTypeInfo`: the SQL types hopper streams, as JDBC's
//! `DatabaseMetaData.getTypeInfo()` (which DBeaver and BI tools read to
//! know a database's types) lists them — PostgreSQL's names, with the
//! XDBC type each maps to.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};

/// A type's row: its name, XDBC type, column size, whether strings of it
/// compare case-sensitively, and the quote its literals take.
struct Row {
    name: &'static str,
    xdbc: XdbcDataType,
    size: Option<i32>,
    text: bool,
    subcode: Option<XdbcDatetimeSubcode>,
}

const ROWS: &[Row] = &[
    row("bool", XdbcDataType::XdbcBit, Some(1), false, None),
    row("int2", XdbcDataType::XdbcSmallint, Some(5), false, None),
    row("int4", XdbcDataType::XdbcInteger, Some(10), false, None),
    row("int8", XdbcDataType::XdbcBigint, Some(19), false, None),
    row("float4", XdbcDataType::XdbcReal, Some(8), false, None),
    row("float8", XdbcDataType::XdbcDouble, Some(17), false, None),
    row("numeric", XdbcDataType::XdbcNumeric, Some(38), false, None),
    row("text", XdbcDataType::XdbcVarchar, None, true, None),
    row("varchar", XdbcDataType::XdbcVarchar, None, true, None),
    row("bpchar", XdbcDataType::XdbcChar, None, true, None),
    row("bytea", XdbcDataType::XdbcVarbinary, None, false, None),
    row(
        "date",
        XdbcDataType::XdbcDate,
        Some(13),
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeUnknown),
    ),
    row(
        "time",
        XdbcDataType::XdbcTime,
        Some(15),
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
    ),
    row(
        "timestamp",
        XdbcDataType::XdbcTimestamp,
        Some(29),
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ),
    row(
        "timestamptz",
        XdbcDataType::XdbcTimestamp,
        Some(35),
        false,
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
    ),
    row("uuid", XdbcDataType::XdbcChar, Some(36), false, None),
    row("json", XdbcDataType::XdbcLongvarchar, None, true, None),
    row("jsonb", XdbcDataType::XdbcLongvarchar, None, true, None),
];

const fn row(
    name: &'static str,
    xdbc: XdbcDataType,
    size: Option<i32>,
    text: bool,
    subcode: Option<XdbcDatetimeSubcode>,
) -> Row {
    Row {
        name,
        xdbc,
        size,
        text,
        subcode,
    }
}

/// The answers to every `GetXdbcTypeInfo`.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    for r in ROWS {
        let numeric = matches!(
            r.xdbc,
            XdbcDataType::XdbcSmallint
                | XdbcDataType::XdbcInteger
                | XdbcDataType::XdbcBigint
                | XdbcDataType::XdbcReal
                | XdbcDataType::XdbcDouble
                | XdbcDataType::XdbcNumeric
        );
        let quoted = !numeric && r.xdbc != XdbcDataType::XdbcBit;
        b.append(XdbcTypeInfo {
            type_name: r.name.into(),
            data_type: r.xdbc,
            column_size: r.size,
            literal_prefix: quoted.then(|| "'".into()),
            literal_suffix: quoted.then(|| "'".into()),
            create_params: (r.name == "numeric").then(|| vec!["precision".into(), "scale".into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: r.text,
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: false,
            auto_increment: numeric.then_some(false),
            local_type_name: Some(r.name.into()),
            minimum_scale: None,
            maximum_scale: (r.name == "numeric").then_some(1000),
            sql_data_type: r.xdbc,
            datetime_subcode: r.subcode,
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        });
    }
    b.build().expect("the XDBC type rows are well-formed")
});
