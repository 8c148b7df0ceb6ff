//! `DoPut` into Greenplum: through the coordinator, which distributes the
//! rows, into a table distributed by the upload's first column.

use super::*;

#[async_trait::async_trait]
impl Writer for GreenplumSource {
    fn shared_tables(&self) -> bool {
        true
    }

    /// Through the coordinator (which distributes the rows), into a table
    /// created `DISTRIBUTED BY` the upload's first column — the key a
    /// writer like `mop predict` puts first. The command's segment means
    /// nothing here: every segment sees the one table.
    async fn put(
        &self,
        caller: &Caller,
        command: &flight_client::put::PutCommand,
        batches: SendableRecordBatchStream,
    ) -> Result<u64> {
        let first = batches
            .schema()
            .fields()
            .first()
            .map(|f| f.name().clone())
            .ok_or_else(|| Error::BadRequest("the upload has no columns".into()))?;
        let _permit = self
            .connections
            .coordinator
            .acquire("the Greenplum coordinator")
            .await?;
        let mut client = connect(
            &self.config_for(caller)?,
            &self.tls,
            "connecting to the Greenplum coordinator",
        )
        .await?;
        let on = format!("{} on the Greenplum coordinator", command.table);
        let distributed = format!(" DISTRIBUTED BY ({})", Ident::new(first)?);
        crate::source::upload::copy_upload(&mut client, &on, command, batches, &distributed).await
    }
}
