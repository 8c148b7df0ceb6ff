//! Sessions with the coordinator and the segments: the settings pinned on
//! every one, the caps on how many are open, the coordinator connection
//! `describe` and `list_tables` share, and the check that the coordinator
//! is a Greenplum that offers parallel retrieve cursors.

use super::*;

/// Session settings pinned on every coordinator and retrieve session: the
/// text parser reads dates, intervals, times with zones, floats and bytea
/// in exactly these forms, whatever the role's own defaults are.
pub(super) const PINNED_SETTINGS: &str =
    "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC \
     -c extra_float_digits=3 -c bytea_output=hex -c standard_conforming_strings=on";

/// `--max-connections` for Greenplum: one cap on the coordinator sessions
/// that hold cursors, and one per segment on its retrieve sessions.
pub(super) struct Connections {
    pub(super) max: usize,
    pub(super) coordinator: ConnectionLimit,
    pub(super) segments: Mutex<HashMap<i32, ConnectionLimit>>,
}

impl Connections {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            coordinator: ConnectionLimit::new(max),
            segments: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn segment(&self, segment: i32) -> ConnectionLimit {
        lock(&self.segments)
            .entry(segment)
            .or_insert_with(|| ConnectionLimit::new(self.max))
            .clone()
    }
}

impl GreenplumSource {
    /// Connects to the coordinator at `coordinator_url` (a libpq URL or
    /// key=value string) with its own login and checks that it offers
    /// parallel retrieve cursors.
    pub async fn new(coordinator_url: &str, limits: BatchLimits) -> Result<Self> {
        Self::open(coordinator_url, limits, true).await
    }

    /// A source over the coordinator at `coordinator_url`. With
    /// `server_login` (`--auth none`) it logs in with the URL now and checks
    /// that this is a Greenplum with parallel retrieve cursors; without, the
    /// URL needs no password: the server connects only as its callers, and
    /// checks the coordinator at each caller's login.
    pub async fn open(
        coordinator_url: &str,
        limits: BatchLimits,
        server_login: bool,
    ) -> Result<Self> {
        if limits.rows == 0 || limits.bytes == 0 {
            return Err(Error::Config(format!(
                "batch limits must be positive, got {} rows / {} bytes",
                limits.rows, limits.bytes
            )));
        }
        let DbUrl { mut config, tls } = DbUrl::parse(coordinator_url, "--greenplum URL")?;
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {PINNED_SETTINGS}"),
            _ => PINNED_SETTINGS.to_owned(),
        };
        config.options(&options).application_name("hopper");
        crate::source::resolve_hosts(&config, "--greenplum").await?;
        let coordinator = if server_login {
            let client = connect(&config, &tls, "connecting to the Greenplum coordinator").await?;
            check_greenplum(&client).await?;
            Some(Arc::new(client))
        } else {
            None
        };
        let registry = Arc::new(Registry {
            timeout: DEFAULT_CURSOR_TIMEOUT,
            inner: Mutex::new(RegistryInner::default()),
            counts: CursorCounts::default(),
        });
        let sweeper = tokio::spawn(sweep(Arc::downgrade(&registry)));
        Ok(Self {
            config,
            tls,
            limits,
            host_map: BTreeMap::new(),
            locator: Arc::new(Locator::default()),
            connections: Connections::new(crate::source::limit::DEFAULT_MAX_CONNECTIONS),
            coordinator: tokio::sync::Mutex::new(coordinator),
            registry,
            sweeper,
        })
    }

    /// Closes cursors left with no endpoint being read for `timeout`.
    pub fn with_cursor_timeout(mut self, timeout: Duration) -> Self {
        self.sweeper.abort();
        self.registry = Arc::new(Registry {
            timeout,
            inner: Mutex::new(RegistryInner::default()),
            counts: CursorCounts::default(),
        });
        self.sweeper = tokio::spawn(sweep(Arc::downgrade(&self.registry)));
        self
    }

    /// Dials `address` for the segment host `name` (as
    /// `gp_segment_configuration` knows it) — `--host-map NAME=ADDRESS`.
    pub fn with_host_map(mut self, map: BTreeMap<String, String>) -> Self {
        self.host_map = map;
        self
    }

    /// Endpoints `locator` places at other flight-servers
    /// (`--segment-flight`, `--segment-flight-port`) are read there: this
    /// server watches their progress on the coordinator instead of seeing
    /// their reads.
    pub fn with_locator(mut self, locator: Arc<Locator>) -> Self {
        self.locator = locator;
        self
    }

    /// Caps coordinator sessions, and retrieve sessions per segment, at `max`.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.connections = Connections::new(max.max(1));
        self
    }

    /// A coordinator connection for `caller`: a fresh session as the
    /// caller's user (its GRANTs apply), or the shared server connection.
    pub(super) async fn coordinator_for(&self, caller: &Caller) -> Result<Arc<Client>> {
        match caller.login_here()? {
            Some(_) => Ok(Arc::new(
                connect(
                    &self.config_for(caller)?,
                    &self.tls,
                    "connecting to the Greenplum coordinator",
                )
                .await?,
            )),
            None => self.coordinator().await,
        }
    }

    /// The coordinator's connection parameters with `caller`'s login.
    pub(super) fn config_for(&self, caller: &Caller) -> Result<Config> {
        let mut config = self.config.clone();
        if let Some(login) = caller.login_here()? {
            config.user(&login.user).password(login.password.as_bytes());
        }
        Ok(config)
    }

    /// The shared coordinator connection, reconnecting if it was lost.
    pub(super) async fn coordinator(&self) -> Result<Arc<Client>> {
        let mut guard = self.coordinator.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            connect(
                &self.config,
                &self.tls,
                "connecting to the Greenplum coordinator",
            )
            .await?,
        );
        *guard = Some(c.clone());
        Ok(c)
    }

    /// How many cursors are open (declared and not yet closed).
    pub fn open_cursors(&self) -> usize {
        lock(&self.registry.inner).open.len()
    }

    /// The connection parameters of a retrieve session to `ep` of a cursor
    /// declared in `database`.
    pub(super) fn retrieve_config(&self, ep: &EndpointInfo, database: &str) -> Config {
        let host = self.host_map.get(&ep.host).unwrap_or(&ep.host);
        let mut c = Config::new();
        c.host(host)
            .port(ep.port)
            .user(&ep.user)
            .password(ep.token.as_bytes())
            .dbname(database)
            .options(format!("-c gp_retrieve_conn=true {PINNED_SETTINGS}"))
            .application_name("hopper-retrieve");
        if let Some(t) = self.config.get_connect_timeout() {
            c.connect_timeout(*t);
        }
        c
    }
}

/// Checks that `client` is connected to a Greenplum coordinator that
/// offers parallel retrieve cursors; a configuration error says what it is
/// instead.
pub(super) async fn check_greenplum(client: &Client) -> Result<()> {
    let ctx = "checking the Greenplum coordinator";
    let row = client
        .query_one(
            "SELECT current_setting('gp_session_id', true), \
                    EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'gp_get_endpoints')",
            &[],
        )
        .await
        .map_err(|e| Error::from_pg(ctx, e))?;
    let session: Option<String> = row.try_get(0).map_err(|e| Error::from_pg(ctx, e))?;
    let has_endpoints: bool = row.try_get(1).map_err(|e| Error::from_pg(ctx, e))?;
    if session.is_none() {
        return Err(Error::Config(
            "the coordinator URL points at a server without gp_session_id: \
             not Greenplum (use --segment for plain PostgreSQL)"
                .into(),
        ));
    }
    if !has_endpoints {
        return Err(Error::Config(
            "this Greenplum has no gp_get_endpoints(): parallel retrieve cursors need \
             Greenplum 7 (or Apache Cloudberry)"
                .into(),
        ));
    }
    Ok(())
}

/// Opens a connection and drives it on a background task.
pub(super) async fn connect(config: &Config, tls: &DbTls, context: &str) -> Result<Client> {
    let (client, connection) = tls
        .connect(config)
        .await
        .map_err(|e| Error::from_pg(context, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Greenplum connection ended");
        }
    });
    Ok(client)
}
