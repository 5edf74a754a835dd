//! The configuration's rules, defaults, documentation and examples, checked.

use super::*;

fn peer(id: u64) -> PeerConfig {
    PeerConfig { id, addr: format!("127.0.0.1:700{id}"), peer_addr: format!("127.0.0.1:710{id}") }
}

fn valid() -> NodeConfig {
    NodeConfig {
        node_id: 1,
        region: "sg".into(),
        peer_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7101))),
        peers: vec![peer(1), peer(2), peer(3)],
        auth: AuthConfig { secret: "0123456789abcdef".into(), ..AuthConfig::default() },
        cluster: ClusterConfig { secret: "fedcba9876543210".into(), ..ClusterConfig::default() },
        ..NodeConfig::default()
    }
}

fn problems(config: &NodeConfig) -> ConfigError {
    config.validate().expect_err("config must be invalid")
}

#[test]
fn a_minimal_config_gets_the_documented_defaults() {
    let config = NodeConfig::from_toml(
        r#"
        node-id = 1
        region = "sg"
        peer-listen = "127.0.0.1:7101"
        [[peers]]
        id = 1
        addr = "127.0.0.1:7001"
        peer-addr = "127.0.0.1:7101"
        [auth]
        secret = "0123456789abcdef"
        [cluster]
        secret = "fedcba9876543210"
        "#,
    )
    .expect("minimal config parses");
    assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 7001)));
    assert_eq!(config.advertise_addr(), "127.0.0.1:7001");
    assert_eq!(config.peer_advertise_addr(), "127.0.0.1:7101");
    assert_eq!(config.tls, None);
    assert_eq!(config.peer_tls, None);
    assert_eq!(config.http_listen, None);
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.shards, 8);
    assert!(config.bootstrap);
    assert_eq!(config.auth.app_id, "meridian");
    assert_eq!(config.auth.token_ttl_seconds, 180 * 24 * 3600);
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.limits.max_message_bytes, 12288);
    assert_eq!(config.limits.recall_window_seconds, 120);
    assert_eq!(config.limits.max_history_page, 100);
    assert_eq!(config.raft, RaftTuning::default());
    assert_eq!(config.raft.heartbeat_interval_ms, 200);
    assert_eq!(config.raft.election_timeout_min_ms, 1000);
    assert_eq!(config.raft.election_timeout_max_ms, 2000);
    assert_eq!(config.raft.snapshot_logs_since_last, 20_000);
    assert_eq!(config.raft.max_in_snapshot_log_to_keep, 1000);
    assert_eq!(config.raft.max_batch_commands, 512);
}

#[test]
fn the_example_region_configs_parse_and_agree() {
    let texts = [
        include_str!("../../../config/region-3node/node-1.toml"),
        include_str!("../../../config/region-3node/node-2.toml"),
        include_str!("../../../config/region-3node/node-3.toml"),
    ];
    let configs: Vec<NodeConfig> =
        texts.iter().map(|t| NodeConfig::from_toml(t).expect("example config is valid")).collect();
    for (i, c) in configs.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(c.node_id, n);
        assert_eq!(c.advertise_addr(), format!("127.0.0.1:700{n}"));
        assert_eq!(c.peer_advertise_addr(), format!("127.0.0.1:710{n}"));
        assert_eq!(c.http_listen, Some(SocketAddr::from(([127, 0, 0, 1], 8000 + n as u16))));
        assert_eq!(c.data_dir, PathBuf::from(format!("./data/node-{n}")));
        // Everything region-wide must be identical on every node.
        assert_eq!(c.region, configs[0].region);
        assert_eq!(c.peers, configs[0].peers);
        assert_eq!(c.shards, configs[0].shards);
        assert_eq!(c.auth, configs[0].auth);
        assert_eq!(c.cluster, configs[0].cluster);
        assert_ne!(c.cluster.secret, c.auth.secret);
    }
}

#[test]
fn docs_describe_every_key_and_their_example_parses() {
    let docs = include_str!("../../../docs/config.md");
    let full = NodeConfig {
        advertise: Some("127.0.0.1:7001".into()),
        peer_advertise: Some("127.0.0.1:7101".into()),
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8001))),
        tls: Some(TlsConfig { cert: "client.crt".into(), key: "client.key".into() }),
        peer_tls: Some(PeerTlsConfig {
            cert: "peer.crt".into(),
            key: "peer.key".into(),
            ca: "ca.crt".into(),
            require_client_cert: true,
        }),
        callbacks: CallbacksConfig {
            url: Some("http://127.0.0.1:8080/cb".into()),
            secret: Some("s".into()),
            ..CallbacksConfig::default()
        },
        push: PushConfig { url: Some("http://127.0.0.1:8080/push".into()), ..PushConfig::default() },
        ..valid()
    };
    let text = full.to_toml().expect("serializes");
    for key in text.lines().filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim())) {
        assert!(docs.contains(&format!("`{key}`")), "docs/config.md does not describe `{key}`");
    }
    let example = docs
        .rsplit("```toml")
        .next()
        .and_then(|rest| rest.split("```").next())
        .expect("docs end with a complete TOML example");
    NodeConfig::from_toml(example).expect("the complete example in docs/config.md is valid");
}

#[test]
fn toml_round_trips() {
    let config = NodeConfig { http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8001))), ..valid() };
    let text = config.to_toml().expect("serializes");
    assert_eq!(NodeConfig::from_toml(&text).expect("parses back"), config);
}

#[test]
fn unknown_keys_are_refused() {
    let err = NodeConfig::from_toml("node-id = 1\nregoin = \"sg\"\n").expect_err("typo");
    assert!(format!("{err:#}").contains("regoin"), "{err:#}");
    let err = NodeConfig::from_toml("[raft]\nheartbeat-ms = 5\n").expect_err("typo");
    assert!(format!("{err:#}").contains("heartbeat-ms"), "{err:#}");
}

#[test]
fn an_empty_file_names_every_required_key() {
    let err = problems(&NodeConfig::default());
    for field in ["node-id", "region", "peers", "auth.secret", "cluster.secret", "peer-listen"] {
        assert!(err.mentions(field), "{field} not reported in: {err}");
    }
    let shown = err.to_string();
    assert!(shown.starts_with("invalid node configuration"), "{shown}");
    assert!(shown.contains("openssl rand"), "{shown}");
}

#[test]
fn bootstrap_requires_this_node_among_the_peers() {
    let config = NodeConfig { node_id: 4, ..valid() };
    let err = problems(&config);
    assert!(err.mentions("peers"), "{err}");
    assert!(err.to_string().contains("node-id 4"), "{err}");
    // A joining node need not be listed.
    let joining = NodeConfig {
        node_id: 4,
        bootstrap: false,
        listen: SocketAddr::from(([127, 0, 0, 1], 7004)),
        peer_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7104))),
        ..valid()
    };
    assert_eq!(joining.validate(), Ok(()));
}

#[test]
fn this_nodes_peer_entry_must_match_its_advertised_address() {
    let config = NodeConfig { advertise: Some("node1.sg.internal:7001".into()), ..valid() };
    let err = problems(&config);
    assert!(err.mentions("peers.addr"), "{err}");
    assert!(err.to_string().contains("node1.sg.internal:7001"), "{err}");
}

#[test]
fn peer_ids_and_addresses_are_unique() {
    let mut config = valid();
    config.peers.push(PeerConfig { addr: "127.0.0.1:7009".into(), peer_addr: "127.0.0.1:7109".into(), ..peer(2) });
    config.peers.push(PeerConfig { id: 5, addr: "127.0.0.1:7003".into(), peer_addr: "127.0.0.1:7105".into() });
    config.peers.push(PeerConfig { id: 6, addr: "no-port".into(), peer_addr: "127.0.0.1:7106".into() });
    let err = problems(&config);
    assert!(err.to_string().contains("node id 2 is listed twice"), "{err}");
    assert!(err.to_string().contains("peers 3 and 5 share the address 127.0.0.1:7003"), "{err}");
    assert!(err.to_string().contains("\"no-port\" is not host:port"), "{err}");
}

#[test]
fn a_wildcard_listen_address_needs_advertise() {
    let config = NodeConfig { listen: "0.0.0.0:7001".parse().expect("addr"), ..valid() };
    assert!(problems(&config).mentions("advertise"));
    let config = NodeConfig { advertise: Some("127.0.0.1:7001".into()), ..config };
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn election_timeouts_must_be_ordered() {
    let mut config = valid();
    config.raft.election_timeout_min_ms = 800;
    config.raft.election_timeout_max_ms = 800;
    config.raft.heartbeat_interval_ms = 900;
    let err = problems(&config);
    assert!(err.mentions("raft.election-timeout-min-ms"), "{err}");
    assert!(err.mentions("raft.heartbeat-interval-ms"), "{err}");
    assert!(err.to_string().contains("900 ms must be below raft.election-timeout-min-ms (800 ms)"), "{err}");
}

#[test]
fn worker_threads_must_be_1_to_1024_when_set() {
    for bad in [0, 1025] {
        let err = problems(&NodeConfig { worker_threads: Some(bad), ..valid() });
        assert!(err.mentions("worker-threads"), "{bad}: {err}");
    }
    for good in [None, Some(1), Some(1024)] {
        assert_eq!(NodeConfig { worker_threads: good, ..valid() }.validate(), Ok(()), "{good:?}");
    }
}

#[test]
fn shards_must_be_a_power_of_two_up_to_1024() {
    for bad in [0, 3, 12, 2048] {
        let err = problems(&NodeConfig { shards: bad, ..valid() });
        assert!(err.mentions("shards"), "{bad}: {err}");
    }
    for good in [1, 2, 8, 1024] {
        assert_eq!(NodeConfig { shards: good, ..valid() }.validate(), Ok(()), "{good}");
    }
}

#[test]
fn region_codes_follow_the_domain_rule() {
    for bad in ["s", "SG", "sg_1", "a-very-long-region-code"] {
        let err = problems(&NodeConfig { region: bad.into(), ..valid() });
        assert!(err.mentions("region"), "{bad}: {err}");
    }
    assert_eq!(NodeConfig { region: "ap-se-1".into(), ..valid() }.validate(), Ok(()));
}

#[test]
fn short_secrets_and_odd_limits_are_refused() {
    let mut config = valid();
    config.auth.secret = "short".into();
    config.auth.app_id = "my app".into();
    config.auth.token_ttl_seconds = 0;
    config.limits.max_message_bytes = 0;
    config.limits.recall_window_seconds = 0;
    config.limits.max_history_page = 0;
    config.raft.max_batch_commands = 0;
    config.http_listen = Some(config.listen);
    let err = problems(&config);
    for field in [
        "auth.secret",
        "auth.app-id",
        "auth.token-ttl-seconds",
        "limits.max-message-bytes",
        "limits.recall-window-seconds",
        "limits.max-history-page",
        "raft.max-batch-commands",
        "http-listen",
    ] {
        assert!(err.mentions(field), "{field} not reported in: {err}");
    }
    assert!(err.to_string().contains("too short (5 bytes)"), "{err}");
}

#[test]
fn debug_output_hides_the_secret() {
    let shown = format!("{:?}", valid());
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(!shown.contains("fedcba9876543210"), "{shown}");
}

#[test]
fn the_peer_listener_needs_a_port_and_a_secret_of_its_own() {
    let mut config = valid();
    config.peer_listen = Some(config.listen);
    config.cluster.secret = config.auth.secret.clone();
    let err = problems(&config);
    assert!(err.mentions("peer-listen"), "{err}");
    assert!(err.to_string().contains("equals auth.secret"), "{err}");
    let config =
        NodeConfig { cluster: ClusterConfig { secret: "short".into(), ..ClusterConfig::default() }, ..valid() };
    assert!(problems(&config).mentions("cluster.secret"));
}

#[test]
fn the_environment_supplies_the_cluster_secret() {
    let mut text = valid().to_toml().expect("serializes");
    text = text.replace("secret = \"fedcba9876543210\"", "");
    assert!(NodeConfig::from_toml(&text).is_err(), "no cluster secret anywhere");
    let config = NodeConfig::from_toml_with_secrets(
        &text,
        Secrets { cluster: Some("from-the-environment".into()), link: None },
        Path::new("."),
    )
    .expect("valid");
    assert_eq!(config.cluster.secret, "from-the-environment");
}

#[test]
fn this_nodes_peer_address_must_match_its_peer_listener() {
    let config = NodeConfig { peer_advertise: Some("node1.sg.internal:7101".into()), ..valid() };
    let err = problems(&config);
    assert!(err.mentions("peers.peer-addr"), "{err}");
    let mut config = valid();
    config.peers[2].peer_addr = config.peers[1].peer_addr.clone();
    assert!(problems(&config).to_string().contains("share the peer address"));
}

#[test]
fn host_port_accepts_names_ipv4_and_bracketed_ipv6() {
    for good in ["a:1", "node1.sg.internal:7001", "10.0.0.1:7001", "[::1]:7001"] {
        assert!(is_host_port(good), "{good}");
    }
    for bad in ["", ":7001", "host", "host:0", "host:70000", "::1:7001", "[zz]:1", "a b:1"] {
        assert!(!is_host_port(bad), "{bad}");
    }
}

#[test]
fn a_node_takes_its_region_from_the_topology_file() {
    let config = NodeConfig::load("../config/regions-4/de-node-1.toml").expect("the example is valid");
    assert_eq!((config.region.as_str(), config.shards), ("de", 8));
    assert_eq!(
        config.peers,
        vec![PeerConfig { id: 1, addr: "127.0.0.1:7021".into(), peer_addr: "127.0.0.1:7121".into() }]
    );
    let regions = config.regions.as_ref().expect("the topology is kept");
    let codes: Vec<&str> = regions.regions.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(codes, ["sg", "kr", "de", "in"]);
}

#[test]
fn a_topology_that_breaks_its_policy_or_does_not_name_the_node_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topology = include_str!("../../../config/regions-4/regions.toml");
    let node = include_str!("../../../config/regions-4/de-node-1.toml");
    let load = |topology: &str, node: &str| {
        std::fs::write(dir.path().join("regions.toml"), topology).expect("write");
        std::fs::write(dir.path().join("node.toml"), node).expect("write");
        NodeConfig::load(dir.path().join("node.toml")).map_err(|e| format!("{e:#}"))
    };
    assert!(load(topology, node).is_ok());
    let abroad = topology.replace(r#"dr = ["de/backup"]"#, r#"dr = ["sg"]"#);
    let err = load(&abroad, node).expect_err("a strict region with DR abroad");
    assert!(err.contains("region de is strict"), "{err}");
    let err = load(topology, &node.replace("node-id = 1", "node-id = 2")).expect_err("not in the file");
    assert!(err.contains("node 2 is not one of region de's nodes"), "{err}");
    let err = load(topology, &node.replace(r#"region = "de""#, r#"region = "fr""#)).expect_err("no such region");
    assert!(err.contains(r#""fr" is not in the topology file"#), "{err}");
    let with_peers = format!("{node}\n[[peers]]\nid = 1\naddr = \"127.0.0.1:7021\"\npeer-addr = \"127.0.0.1:7121\"\n");
    let err = load(topology, &with_peers).expect_err("peers given twice");
    assert!(err.contains("leave [[peers]] out"), "{err}");
    let err = load(topology, &node.replace("127.0.0.1:7121", "127.0.0.1:7999")).expect_err("wrong address");
    assert!(err.contains("the topology file says 127.0.0.1:7121"), "{err}");
}

#[test]
fn an_archive_replica_goes_to_one_of_the_regions_dr_places() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topology = include_str!("../../../config/regions-4/regions.toml");
    let node = include_str!("../../../config/regions-4/de-node-1.toml");
    let load = |archive: &str| {
        std::fs::write(dir.path().join("regions.toml"), topology).expect("write");
        std::fs::write(dir.path().join("node.toml"), format!("{node}\n[archive]\n{archive}")).expect("write");
        NodeConfig::load(dir.path().join("node.toml")).map_err(|e| format!("{e:#}"))
    };
    let base = "hot-window-seconds = 86400\nplace = \"de\"\nreplica-store = \"fs\"\nreplica-path = \"/srv/dr\"\n";
    let config = load(&format!("{base}replica-place = \"de/backup\"\n")).expect("a replica in the dr place");
    assert_eq!(config.archive.replica_place.as_deref(), Some("de/backup"));
    let err = load(&format!("{base}replica-place = \"sg\"\n")).expect_err("a replica abroad");
    assert!(err.contains("archive.replica-place"), "{err}");
    let err = load(base).expect_err("a replica without its place");
    assert!(err.contains("archive.replica-place"), "{err}");
    let err =
        load("hot-window-seconds = 86400\nplace = \"de\"\nreplica-store = \"fs\"\nreplica-place = \"de/backup\"\n")
            .expect_err("an fs replica without its directory");
    assert!(err.contains("archive.replica-path"), "{err}");
}

#[test]
fn webhooks_need_a_plain_http_url_when_switched_on() {
    let fields = |c: NodeConfig| -> Vec<String> {
        c.validate().err().map(|e| e.problems.into_iter().map(|p| p.field).collect()).unwrap_or_default()
    };
    let on_without_url =
        NodeConfig { callbacks: CallbacksConfig { after_send: true, ..CallbacksConfig::default() }, ..valid() };
    assert_eq!(fields(on_without_url), ["callbacks.url"]);
    let https = NodeConfig {
        push: PushConfig { url: Some("https://push.example/x".into()), batch: 0, ..PushConfig::default() },
        ..valid()
    };
    assert_eq!(fields(https), ["push.url", "push.batch"]);
    let ok = NodeConfig {
        callbacks: CallbacksConfig {
            url: Some("http://hooks.internal:8080/im".into()),
            before_send: BeforeMode::FailClosed,
            ..CallbacksConfig::default()
        },
        ..valid()
    };
    assert_eq!(fields(ok), Vec::<String>::new());
    let text = "[callbacks]\nurl = \"http://h/x\"\nbefore-send = \"fail-closed\"\n[push]\npreview = \"hidden\"\n";
    let parsed: NodeConfig = toml::from_str(text).expect("parses");
    assert_eq!((parsed.callbacks.before_send, parsed.push.preview), (BeforeMode::FailClosed, PreviewMode::Hidden));
}
