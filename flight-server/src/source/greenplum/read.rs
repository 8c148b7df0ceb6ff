//! Reading: [`Reader`] for Greenplum — planning declares a parallel
//! retrieve cursor on the coordinator, one partition per endpoint; reading
//! an endpoint retrieves it in a task that feeds a bounded channel.

use super::*;

#[async_trait::async_trait]
impl Reader for GreenplumSource {
    async fn describe(&self, caller: &Caller, sql: &str) -> Result<SchemaRef> {
        let client = self.coordinator_for(caller).await?;
        // Preparing also proves `sql` is a single statement, which `plan`
        // relies on before splicing it into DECLARE.
        let stmt = client
            .prepare(sql)
            .await
            .map_err(|e| Error::from_pg("preparing the query on the coordinator", e))?;
        Ok(Arc::new(arrow_schema(stmt.columns())?))
    }

    async fn plan(&self, caller: &Caller, sql: &str) -> Result<Plan> {
        self.declare(caller, sql, None).await
    }

    async fn export_snapshot(&self, caller: &Caller) -> Result<HeldSnapshot> {
        // Greenplum 7 exports distributed snapshots: a cursor declared in a
        // transaction that imports one reads exactly its rows on every
        // segment. One coordinator session holds it, under --max-connections.
        let permit = self
            .connections
            .coordinator
            .acquire("the Greenplum coordinator")
            .await?;
        let session = connect(
            &self.config_for(caller)?,
            &self.tls,
            "opening a coordinator session to hold a snapshot",
        )
        .await?;
        let ctx = |e| Error::from_pg("exporting a snapshot on the coordinator", e);
        session
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(ctx)?;
        let name: String = session
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(ctx)?
            .get(0);
        Ok(HeldSnapshot {
            names: SnapshotNames(BTreeMap::from([(COORDINATOR, name)])),
            sessions: vec![(session, Some(permit))],
        })
    }

    async fn plan_at(&self, caller: &Caller, sql: &str, snapshot: &SnapshotNames) -> Result<Plan> {
        self.declare(caller, sql, Some(snapshot.of(COORDINATOR)?))
            .await
    }

    // The endpoint's token is the credential of a retrieve session; the
    // ticket, sealed and bound to the user who declared the cursor, guards
    // it. A cursor this server declared is tracked here; one another server
    // declared (or this one before a restart) is read from the ticket alone.
    async fn read(
        &self,
        _caller: &Caller,
        partition: &Partition,
    ) -> Result<SendableRecordBatchStream> {
        let PartitionSpec::Greenplum {
            cursor: spec,
            retrieve: ticket,
        } = &partition.spec
        else {
            return Err(Error::BadTicket(
                "this server serves Greenplum cursors; the ticket is for another kind of source"
                    .into(),
            ));
        };
        let (id, segment) = spec
            .split_once('/')
            .and_then(|(id, seg)| Some((id, seg.parse::<i32>().ok()?)))
            .ok_or_else(|| Error::BadTicket(format!("malformed Greenplum endpoint {spec:?}")))?;
        if segment != partition.segment {
            return Err(Error::BadTicket(format!(
                "endpoint {spec:?} does not belong to segment {}",
                partition.segment
            )));
        }
        let tracked = {
            let reg = lock(&self.registry.inner);
            match reg.open.get(id) {
                Some(c) => Some(c.clone()),
                None if reg.closed.contains_key(id) => {
                    return Err(Error::BadTicket(format!(
                        "endpoint already read: cursor {id} was closed once all its endpoints \
                         were read; an endpoint can be read once, plan the query again"
                    )))
                }
                None => None,
            }
        };
        // The retrieve slot first: a DoGet cancelled while it waits in line
        // has claimed nothing, so its endpoint stays readable and its cursor
        // stays sweepable. From here to the spawned task nothing awaits.
        let permit = self
            .connections
            .segment(segment)
            .acquire(&format!("segment {segment}"))
            .await?;
        if let Some(cursor) = &tracked {
            let mut state = lock(&cursor.state);
            let ep = state.endpoints.get_mut(&segment).ok_or_else(|| {
                Error::BadTicket(format!("cursor {id} has no endpoint on segment {segment}"))
            })?;
            if !matches!(ep.status, Status::Ready | Status::Remote) {
                return Err(Error::BadTicket(format!(
                    "endpoint already read (segment {segment} of cursor {id} is {:?}); \
                     a Greenplum endpoint can be read once, plan the query again",
                    ep.status
                )));
            }
            ep.status = Status::Reading;
            state.last_activity = Instant::now();
        }
        let info = ticket.info();
        let schema = match &tracked {
            Some(c) => c.schema.clone(),
            None => decode_schema(&ticket.schema)?,
        };
        let config = self.retrieve_config(&info, &ticket.database);
        let tls = self.tls.clone();
        let limits = self.limits;
        let registry = self.registry.clone();
        let id = id.to_string();
        let batch_schema = schema.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            // Stop RETRIEVE as soon as the client goes away, even while
            // waiting for the segment: dropping the future closes the
            // retrieve connection.
            let outcome = tokio::select! {
                r = retrieve(&config, &tls, &info, batch_schema, limits, &tx) => r,
                () = tx.closed() => Ok(false),
            };
            drop(permit);
            let Some(cursor) = tracked else {
                // Another server holds the cursor and watches its endpoints;
                // an endpoint that is gone means its cursor was closed.
                if let Err(e) = outcome {
                    let _ = tx.send(Err(gone_endpoint(e))).await;
                }
                return;
            };
            let status = match outcome {
                Ok(true) => {
                    registry.counts.drained.fetch_add(1, Ordering::Relaxed);
                    Status::Drained
                }
                Ok(false) => Status::Abandoned,
                Err(e) => {
                    // A cursor that failed on the coordinator takes its
                    // endpoints with it, and the retrieve only sees them
                    // gone: the cursor's own error says why.
                    let e = cursor_failure(&cursor).await.unwrap_or(e);
                    let _ = tx.send(Err(e)).await;
                    Status::Abandoned
                }
            };
            let finished = {
                let mut state = lock(&cursor.state);
                if let Some(ep) = state.endpoints.get_mut(&segment) {
                    ep.status = status;
                }
                state.last_activity = Instant::now();
                state.endpoints.values().all(|e| e.status.is_done())
            };
            // The last endpoint to finish closes the cursor. When every
            // endpoint was read to the end, its stream carries whatever error
            // the coordinator reports (the data may be incomplete); when some
            // reader gave up, the cursor's error is about that reader, not
            // this complete stream, and is only logged.
            if finished && registry.retire(&id).is_some() {
                let all_drained = lock(&cursor.state)
                    .endpoints
                    .values()
                    .all(|e| e.status == Status::Drained);
                if let Err(e) = close(&cursor).await {
                    if all_drained {
                        let _ = tx.send(Err(e)).await;
                    } else {
                        tracing::info!(cursor = %id, error = %e, "closed a cursor one of whose readers gave up");
                    }
                }
            }
        });
        Ok(RecordBatchStreamAdapter::boxed(
            schema,
            ReceiverStream::new(rx),
        ))
    }

    fn cursors_held(&self) -> usize {
        self.open_cursors()
    }

    fn single_read(&self) -> bool {
        true
    }

    fn cursor_totals(&self) -> CursorTotals {
        self.registry.counts.totals()
    }

    fn connections_in_use(&self) -> Vec<(i32, usize)> {
        let mut out = vec![(-1, self.connections.coordinator.in_use())];
        let mut segments: Vec<(i32, usize)> = lock(&self.connections.segments)
            .iter()
            .map(|(s, l)| (*s, l.in_use()))
            .collect();
        segments.sort_unstable();
        out.extend(segments);
        out
    }
}

impl GreenplumSource {
    /// Declares a parallel retrieve cursor for `sql` as `caller`, at the
    /// exported snapshot `snapshot` when given; one partition per endpoint.
    async fn declare(&self, caller: &Caller, sql: &str, snapshot: Option<&str>) -> Result<Plan> {
        let schema = self.describe(caller, sql).await?;
        // Refuse types without a text parser now, not at the first DoGet.
        BatchBuilder::new(schema.clone())?;

        let id = format!("{:032x}", rand::random::<u128>());
        let name = format!("hopper_{}", &id[..16]);
        // The cursor's session counts under --max-connections until it
        // closes. At the cap, the cursor idle longest (none of its
        // endpoints being read) makes room: a plan nobody reads from must
        // not hold up the ones people do.
        let permit = match self.connections.coordinator.try_acquire() {
            Some(p) => p,
            None => {
                if let Some((old, cursor)) = self.registry.evict_idle(caller.user()) {
                    tracing::info!(cursor = %old, "closing the longest-idle cursor to stay within --max-connections");
                    if let Err(e) = close(&cursor).await {
                        tracing::debug!(cursor = %old, error = %e, "closing an evicted cursor");
                    }
                }
                self.connections
                    .coordinator
                    .acquire("the Greenplum coordinator")
                    .await?
            }
        };
        // A dedicated session: the cursor lives in its transaction. If
        // anything below fails, dropping `session` ends the connection and
        // the server rolls the transaction back.
        let session = connect(
            &self.config_for(caller)?,
            &self.tls,
            "opening a coordinator session for the cursor",
        )
        .await?;
        let ctx = "declaring the parallel retrieve cursor";
        // Read-only: a cursor's query cannot write, whatever it calls.
        let begin = match snapshot {
            // The importing transaction must be REPEATABLE READ, and import
            // before its first query.
            Some(name) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{name}'"
            ),
            None => "BEGIN READ ONLY".to_owned(),
        };
        session
            .batch_execute(&begin)
            .await
            .map_err(|e| match e.code() {
                Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
                    if snapshot.is_some() =>
                {
                    Error::BadTicket(format!(
                        "the run's snapshot is no longer held on the coordinator: {e}; \
                         pin a new one (mop does, and checks the rows against its first read)"
                    ))
                }
                _ => Error::from_pg(ctx, e),
            })?;
        // `sql` was accepted by `prepare` above, so it is exactly one
        // statement; DECLARE itself only accepts SELECT/VALUES.
        session
            .batch_execute(&format!(
                "DECLARE {name} PARALLEL RETRIEVE CURSOR FOR {sql}"
            ))
            .await
            .map_err(|e| Error::from_pg(ctx, e))?;
        let endpoints = list_endpoints(&session, &name).await?;
        let database = first_value(
            &session
                .simple_query("SELECT current_database()")
                .await
                .map_err(|e| Error::from_pg(ctx, e))?,
        )
        .unwrap_or_default()
        .to_string();
        if endpoints.is_empty() {
            // A cursor that failed at once (on the coordinator's entry db)
            // lists no endpoint: its own error says why.
            if let Err(e) = session
                .simple_query(&format!(
                    "SELECT gp_wait_parallel_retrieve_cursor('{name}', 0)"
                ))
                .await
            {
                return Err(Error::from_pg(
                    "the parallel retrieve cursor failed on the coordinator",
                    e,
                ));
            }
            return Err(Error::Internal(format!(
                "gp_get_endpoints() lists no endpoint for cursor {name} in this session"
            )));
        }

        let partitions = endpoints
            .iter()
            .map(|(&segment, info)| {
                Ok(Partition {
                    segment,
                    spec: PartitionSpec::Greenplum {
                        cursor: format!("{id}/{segment}"),
                        retrieve: Retrieve::new(info, &database, &schema)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Endpoints read at another server are watched on the coordinator.
        let statuses: BTreeMap<i32, Endpoint> = endpoints
            .iter()
            .map(|(&seg, info)| {
                let status = if self.locator.is_elsewhere(seg, Some(&info.host)) {
                    Status::Remote
                } else {
                    Status::Ready
                };
                (seg, Endpoint { status })
            })
            .collect();
        let watch = statuses.values().any(|e| e.status == Status::Remote);
        let cursor = Arc::new(Cursor {
            name,
            owner: caller.user().map(str::to_owned),
            schema: schema.clone(),
            _permit: permit,
            session: Mutex::new(Some(Arc::new(session))),
            state: Mutex::new(CursorState {
                endpoints: statuses,
                last_activity: Instant::now(),
            }),
        });
        lock(&self.registry.inner)
            .open
            .insert(id.clone(), cursor.clone());
        let counts = &self.registry.counts;
        counts.declared.fetch_add(1, Ordering::Relaxed);
        counts
            .endpoints
            .fetch_add(partitions.len() as u64, Ordering::Relaxed);
        if watch {
            tokio::spawn(watch_remote(Arc::downgrade(&self.registry), id, cursor));
        }
        Ok(Plan { schema, partitions })
    }
}
