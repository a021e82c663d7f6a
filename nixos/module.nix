# services.provisioning: the Provisioning daemon and its dnsmasq as hardened
# systemd units.
#
# This file is a function of the flake (for the default package) returning a
# NixOS module; flake.nix exports it as `nixosModules.default`. Without a
# flake, import it with `{ self = null; }` and set `package` yourself.
#
# What it never does: put a secret into the Nix store (secrets are file paths
# handed over with LoadCredential=), or touch `nixpkgs.overlays`.
{
  self ? null,
}:
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.services.provisioning;
  pxe = cfg.settings.pxe;

  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    types
    ;

  kdl = import ./hosts-to-kdl.nix;
  # YAML 1.2, as the daemon's parser reads it (no `yes`/`no` booleans).
  settingsFormat = pkgs.formats.yaml_1_2 { };

  # Where the daemon and the tools find the settings. A stable path (not the
  # store path) lets a settings change be a reload instead of a restart.
  configPath = "/etc/provisioning/provisioning.yaml";

  # systemd puts LoadCredential= files here for provisioning.service.
  credentialsDir = "/run/credentials/provisioning.service";

  # The dhcp-hostsdir the daemon writes and dnsmasq reads: both units run as
  # the same dynamic user, so the daemon's runtime directory (mode 0700) is
  # readable by dnsmasq and by no one else.
  dnsmasqHostsDir = "/run/provisioning/dnsmasq-hosts";
  dnsmasqConf = "/run/provisioning-dnsmasq/dnsmasq.conf";

  # Secret file options: the credential name they get and the settings key
  # that receives the credential's path.
  secretOptions = [
    {
      option = "rootPasswordHashFile";
      credential = "root-password-hash";
      section = "answer";
      key = "root_password_hash_file";
      what = "the crypt(3) hash (e.g. from `mkpasswd -m sha-512`) of the root password of installed hosts";
    }
    {
      option = "joinPasswordFile";
      credential = "join-password";
      section = "proxmox";
      key = "join_password_file";
      what = "the root password of the existing cluster node, given to `pvecm add` on stdin";
    }
    {
      option = "answerTokenFile";
      credential = "answer-token";
      section = "proxmox";
      key = "answer_token_file";
      what = "the token the installer presents when it fetches its answer file (the ISO is prepared with it)";
    }
    {
      option = "infrastructureTokenFile";
      credential = "infrastructure-token";
      section = "infrastructure";
      key = "token_file";
      what = "the API token for the Infrastructure service";
    }
  ];
  secretsInUse = lib.filter (s: cfg.${s.option} != null) secretOptions;

  # Rejects what would copy a secret into the world-readable store: a Nix
  # path literal (interpolating it copies the file) or a store path.
  isSafeSecretPath =
    v: !(builtins.isPath v) && lib.hasPrefix "/" v && !(lib.hasPrefix "${builtins.storeDir}/" v);

  # The Nix-declared hosts, one KDL file each, in a store directory that the
  # daemon reads next to the mutable hostsDir.
  hostsStoreDir = pkgs.runCommandLocal "provisioning-hosts.d" { } (
    "mkdir $out\n"
    + lib.concatMapStrings (name: ''
      cp ${pkgs.writeText "${name}.kdl" (kdl.file name cfg.hosts.${name})} $out/${name}.kdl
    '') (lib.attrNames cfg.hosts)
    + lib.optionalString cfg.checkDeclarations ''
      ${lib.getExe cfg.package} check ${lib.optionalString serverTypesInStore "--server-types ${cfg.settings.paths.server_types}"} $out
    ''
  );

  serverTypesInStore =
    cfg.settings.paths.server_types != null
    && lib.hasPrefix "${builtins.storeDir}/" cfg.settings.paths.server_types;

  serverTypesFile = settingsFormat.generate "server-types.yaml" { server_types = cfg.serverTypes; };

  # The daemon rejects unknown keys and may reject nulls; an unset option
  # leaves no key at all.
  settingsFile = settingsFormat.generate "provisioning.yaml" (
    lib.filterAttrsRecursive (_: v: v != null) cfg.settings
  );

  listenPort = lib.toInt (lib.last (lib.splitString ":" cfg.settings.server.listen));

  dnsmasqCapabilities = [
    "CAP_NET_BIND_SERVICE" # DHCP (67), proxy-DHCP (4011), TFTP (69)
    "CAP_NET_RAW" # DHCP replies to clients that have no address yet
    "CAP_NET_ADMIN" # binding to one interface, ARP entries
  ];
  daemonCapabilities = lib.unique (
    lib.optional (listenPort < 1024) "CAP_NET_BIND_SERVICE"
    ++ lib.optionals spawnsDnsmasq dnsmasqCapabilities
  );

  # Sandboxing shared by both units; each adds what it needs on top.
  hardening = {
    DynamicUser = true;
    User = "provisioning";
    Group = "provisioning";
    UMask = "0077";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
  };

  spawnsDnsmasq = pxe.enable && pxe.dnsmasq == "spawn";

  nullOrStr =
    description:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      inherit description;
    };

  # A settings section: free-form (so that a key the module does not know yet
  # can still be set) with typed, documented known keys.
  section =
    description: module:
    mkOption {
      type = types.submodule [
        { freeformType = settingsFormat.type; }
        module
      ];
      default = { };
      inherit description;
    };

  secretOption =
    s:
    mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      example = "/run/secrets/provisioning/${s.credential}";
      description = ''
        File holding ${s.what}. Passed to the daemon with systemd's
        `LoadCredential=` (as credential `${s.credential}`), so it is read by
        systemd as root and never enters the Nix store: give an absolute path
        as a string, not a Nix path literal. Sets
        `settings.${s.section}.${s.key}`.
      '';
    };

  hostModule =
    { name, ... }:
    {
      freeformType = types.attrsOf types.anything;
      options = {
        mac = mkOption {
          type = types.strMatching "([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}";
          example = "58:47:ca:71:02:1e";
          description = "MAC address of the interface the host PXE-boots from.";
        };
        server-type = mkOption {
          type = types.str;
          example = "minisforum-ms-01";
          description = "Key of the host's server type (see `serverTypes`).";
        };
        rebuild = mkOption {
          type = types.ints.unsigned;
          default = 0;
          description = ''
            Desired rebuild generation of `${name}`: raise it to request a
            (re)install; 0 leaves the host alone.
          '';
        };
      };
    };
in
{
  options.services.provisioning = {
    enable = mkEnableOption "Provisioning, which turns bare-metal machines into joined Proxmox VE cluster nodes";

    package = mkOption {
      type = types.package;
      default =
        if self != null then
          self.packages.${pkgs.stdenv.hostPlatform.system}.default
        else
          pkgs.callPackage ../nix/package.nix { };
      defaultText = literalExpression "provisioning.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The provisioning package (by default the flake's own build).";
    };

    ipxePackage = mkOption {
      type = types.package;
      default =
        let
          # PXE clients are x86_64 machines whatever the server runs on.
          ipxe = if pkgs.stdenv.hostPlatform.isx86_64 then pkgs.ipxe else pkgs.pkgsCross.gnu64.ipxe;
        in
        ipxe.override { additionalTargets."bin-x86_64-efi/snponly.efi" = null; };
      defaultText = literalExpression ''pkgs.ipxe.override { additionalTargets."bin-x86_64-efi/snponly.efi" = null; }'';
      description = ''
        iPXE build served over TFTP: it must contain `undionly.kpxe` (BIOS),
        `snponly.efi` and `ipxe.efi` (UEFI). Sets `settings.pxe.ipxe_dir`.
      '';
    };

    hostsDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/srv/provisioning/hosts.d";
      description = ''
        A mutable directory of host declarations (`*.kdl`), for example a git
        checkout; the daemon hot-reloads it. It is read alongside the hosts
        declared in `hosts`; a host declared in both places is an error the
        daemon reports (dashboard, journal, `provisioning check`). It must be
        readable by others (the daemon runs as a dynamic user) and not under
        /home or /root (hidden by `ProtectHome=`).
      '';
    };

    hosts = mkOption {
      type = types.attrsOf (types.submodule hostModule);
      default = { };
      example = literalExpression ''
        {
          pve-01 = {
            mac = "58:47:ca:71:02:1e";
            server-type = "minisforum-ms-01";
            rebuild = 1;
            wake-on-lan = true;
          };
        }
      '';
      description = ''
        Host declarations as Nix attribute sets, rendered into one KDL file
        per host in the store (attribute names become KDL node names; see
        nixos/hosts-to-kdl.nix for the exact mapping). The attribute name is
        the host name and must be a DNS label.
      '';
    };

    renderedHosts = mkOption {
      type = types.package;
      default = hostsStoreDir;
      defaultText = literalExpression "a store directory with one KDL file per host in hosts";
      readOnly = true;
      internal = true;
      description = "The hosts of `hosts` rendered into KDL files, the directory the daemon reads.";
    };

    checkDeclarations = mkOption {
      type = types.bool;
      default =
        cfg.hostsDir == null
        && (cfg.settings.paths.server_types == null || serverTypesInStore)
        && pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
      defaultText = literalExpression "hostsDir == null, server types (if any) in the store, not cross-compiling";
      description = ''
        Run `provisioning check` on the hosts declared in `hosts` when the
        system is built, so that a bad declaration fails the build instead of
        showing up on the dashboard. Off by default when a `hostsDir` is used
        or the server types live outside the store, since the check would
        then miss what is only known at run time.
      '';
    };

    serverTypes = mkOption {
      type = types.attrsOf settingsFormat.type;
      default = { };
      example = literalExpression ''
        {
          minisforum-ms-01 = {
            display_name = "Minisforum MS-01";
            boot_disk = "nvme0n1";
            management_nic = "enp2s0f0np0";
            gpu = false;
          };
        }
      '';
      description = ''
        Server types, written to a `server-types.yaml` in the store (the
        `server_types` map of that file). When non-empty, sets
        `settings.paths.server_types`.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the HTTP port of `settings.server.listen` and, when PXE is
        served by our dnsmasq, UDP 67 (DHCP), 69 (TFTP) and 4011 (proxy-DHCP)
        on `settings.pxe.interface`.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        Contents of `provisioning.yaml`. Known keys are typed and documented
        below; any other key is passed through (the daemon rejects unknown
        keys with file, line and column). Unset (null) options are left out.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          server = section "HTTP server." (
            { config, ... }:
            {
              options.listen = mkOption {
                type = types.str;
                default = if pxe.enable then "0.0.0.0:8080" else "127.0.0.1:8080";
                defaultText = literalExpression ''if settings.pxe.enable then "0.0.0.0:8080" else "127.0.0.1:8080"'';
                description = "Address and port the daemon listens on (PXE clients must reach it).";
              };
              options.public_url = mkOption {
                type = types.nullOr types.str;
                default =
                  if pxe.server_address != null then
                    "http://${pxe.server_address}:${lib.last (lib.splitString ":" config.listen)}"
                  else
                    null;
                defaultText = literalExpression ''"http://''${settings.pxe.server_address}:<port of listen>"'';
                example = "http://10.0.0.2:8080";
                description = "Base URL machines use to reach the daemon (iPXE, installer, first boot).";
              };
            }
          );

          paths = section "File system locations." {
            options.hosts_dir = mkOption {
              type = types.str;
              default = if cfg.hostsDir != null then cfg.hostsDir else "${cfg.renderedHosts}";
              defaultText = literalExpression "hostsDir, or the store directory rendered from hosts";
              description = "Directory of host declarations (hot-reloaded).";
            };
            options.extra_hosts_dirs = mkOption {
              type = types.listOf types.str;
              default = lib.optional (cfg.hostsDir != null && cfg.hosts != { }) "${cfg.renderedHosts}";
              defaultText = literalExpression "[ <store directory rendered from hosts> ] when hostsDir is set";
              description = "Further declaration directories, read together with `hosts_dir`.";
            };
            options.server_types = mkOption {
              type = types.nullOr types.str;
              default = if cfg.serverTypes != { } then "${serverTypesFile}" else null;
              defaultText = literalExpression "a server-types.yaml rendered from serverTypes, if any";
              description = "Path of `server-types.yaml` (hot-reloaded).";
            };
            options.state_dir = mkOption {
              type = types.str;
              default = "/var/lib/provisioning";
              readOnly = true;
              description = "State directory (SQLite store); systemd's `StateDirectory=`.";
            };
          };

          pxe = section "PXE service: proxy-DHCP and TFTP (dnsmasq) for declared machines." (
            { config, ... }:
            {
              options = {
                enable = mkEnableOption "PXE service";
                interface = nullOrStr "Interface facing the machines (required with PXE).";
                subnet = nullOrStr "IPv4 subnet (CIDR) of that interface, e.g. `10.0.0.0/24` (required with PXE).";
                server_address = nullOrStr "This server's IPv4 address on that subnet (required with PXE).";
                dnsmasq = mkOption {
                  type = types.enum [
                    "external"
                    "spawn"
                    "off"
                  ];
                  default = "external";
                  description = ''
                    Who runs dnsmasq: `external` is the separate unit
                    `provisioning-dnsmasq.service` of this module (recommended:
                    the daemon then needs no network capabilities), `spawn` the
                    daemon as a child process (the daemon unit gets dnsmasq's
                    capabilities), `off` nobody (PXE answered elsewhere).
                  '';
                };
                ipxe_dir = mkOption {
                  type = types.nullOr types.str;
                  default = if config.enable then "${cfg.ipxePackage}" else null;
                  defaultText = literalExpression ''"''${ipxePackage}" (with PXE)'';
                  description = "TFTP root with `undionly.kpxe`, `snponly.efi` and `ipxe.efi`.";
                };
                dnsmasq_binary = mkOption {
                  type = types.nullOr types.str;
                  default = if config.enable then lib.getExe' pkgs.dnsmasq "dnsmasq" else null;
                  defaultText = literalExpression ''lib.getExe' pkgs.dnsmasq "dnsmasq" (with PXE)'';
                  description = "dnsmasq executable (used with `dnsmasq = \"spawn\"`).";
                };
                hostsdir = mkOption {
                  type = types.str;
                  default = dnsmasqHostsDir;
                  description = ''
                    The `dhcp-hostsdir` the daemon maintains (which MACs get
                    PXE answers) and dnsmasq re-reads by itself.
                  '';
                };
                discover_unknown = mkOption {
                  type = types.bool;
                  default = false;
                  description = "Record PXE requests from undeclared MACs (they are never answered).";
                };
              };
            }
          );

          proxmox = section "The Proxmox VE installer and the cluster to join." {
            options = {
              iso = mkOption {
                type = types.nullOr types.path;
                default = null;
                description = "Prepared Proxmox VE ISO (`provisioning iso prepare`) served to installers.";
              };
              iso_sha256 = nullOrStr "SHA-256 of `iso` (64 hex digits), checked by `/pxe-init`.";
              kernel = mkOption {
                type = types.nullOr types.path;
                default = null;
                description = "Installer kernel (linux26 from the ISO).";
              };
              initrd = mkOption {
                type = types.nullOr types.path;
                default = null;
                description = "Installer initrd (initrd.img from the ISO).";
              };
              existing_node = nullOrStr "Address of an existing cluster node that new hosts join (`pvecm add`).";
              join_fingerprint = nullOrStr "TLS fingerprint of that node (`pvecm add --fingerprint`).";
            };
          };

          answer = section "Defaults of the Proxmox answer file." {
            options = {
              keyboard = nullOrStr "Keyboard layout (daemon default `en-us`).";
              country = nullOrStr "Two-letter country code (daemon default `us`).";
              timezone = nullOrStr "Time zone (daemon default `UTC`).";
              mailto = nullOrStr "Administrator e-mail (daemon default `root@localhost`).";
              domain = nullOrStr "DNS domain of installed hosts (daemon default `lan`).";
            };
          };

          infrastructure = section "The Infrastructure service that ready hosts are registered with." {
            options = {
              base_url = nullOrStr "Base URL of its API; unset skips registration.";
              server_type_map = mkOption {
                type = types.attrsOf types.str;
                default = { };
                description = "Our server-type keys mapped to the Infrastructure service's.";
              };
            };
          };

          deadlines = mkOption {
            type = types.attrsOf types.str;
            default = { };
            example = {
              installing = "90m";
            };
            description = ''
              How long each state of a rebuild may last before it fails, as
              durations like `30m` or `1h 30m`. Keys: `pxe_ready`, `pxe_booted`,
              `installing`, `installed`, `first_boot`, `joining`.
            '';
          };
        };
      };
    };
  }
  // lib.listToAttrs (
    map (s: {
      name = s.option;
      value = secretOption s;
    }) secretOptions
  );

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        map (s: {
          assertion = cfg.${s.option} == null || isSafeSecretPath cfg.${s.option};
          message = ''
            services.provisioning.${s.option} must be an absolute path outside the
            Nix store, given as a string (a path literal or a store path would put
            the secret into the world-readable store).
          '';
        }) secretOptions
        ++ [
          {
            assertion =
              !pxe.enable || (pxe.interface != null && pxe.subnet != null && pxe.server_address != null);
            message = "services.provisioning.settings.pxe: interface, subnet and server_address are required with PXE.";
          }
          {
            assertion = lib.all (n: builtins.match "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?" n != null) (
              lib.attrNames cfg.hosts
            );
            message = "services.provisioning.hosts: every host name must be a DNS label (a-z, 0-9, '-', at most 63).";
          }
        ];

      warnings = lib.optional (
        cfg.hostsDir != null && (lib.hasPrefix "/home/" cfg.hostsDir || lib.hasPrefix "/root/" cfg.hostsDir)
      ) "services.provisioning.hostsDir is under /home or /root, which the sandboxed daemon cannot read.";

      services.provisioning.settings = mkMerge (
        map (s: { ${s.section}.${s.key} = "${credentialsDir}/${s.credential}"; }) secretsInUse
      );

      environment.etc."provisioning/provisioning.yaml".source = settingsFile;

      # `provisioning status`, `provisioning check` for operators.
      environment.systemPackages = [ cfg.package ];

      systemd.services.provisioning = {
        description = "Provisioning: bare-metal machines to Proxmox VE cluster nodes";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];

        # A settings, server-types or Nix-declared-hosts change is a reload
        # (SIGHUP: the daemon re-reads settings and server types and rescans
        # the hosts directories); the listen address is only read at start,
        # so a change there restarts the daemon. A new package changes
        # ExecStart, which restarts it anyway.
        reloadTriggers = [ settingsFile ];
        restartTriggers = [ cfg.settings.server.listen ];

        serviceConfig = hardening // {
          Type = "notify";
          NotifyAccess = "main";
          WatchdogSec = "30s";
          ExecStart = "${lib.getExe cfg.package} serve --config ${configPath}";
          ExecReload = "${lib.getExe' pkgs.coreutils "kill"} -HUP $MAINPID";
          Restart = "on-failure";
          RestartSec = "5s";

          StateDirectory = "provisioning";
          StateDirectoryMode = "0700";
          # systemd creates the dhcp-hostsdir too, so dnsmasq finds it even
          # before the daemon has armed anything.
          RuntimeDirectory = [
            "provisioning"
            "provisioning/dnsmasq-hosts"
          ];
          RuntimeDirectoryMode = "0700";
          LoadCredential = map (s: "${s.credential}:${toString cfg.${s.option}}") secretsInUse;

          CapabilityBoundingSet = if daemonCapabilities == [ ] then [ "" ] else daemonCapabilities;
          AmbientCapabilities = daemonCapabilities;
          # A user namespace would keep capabilities from applying to the
          # host's network, so only without them.
          PrivateUsers = daemonCapabilities == [ ];
          # The SSH client, the HTTP server and clients, wake-on-lan, and
          # (netlink) interface addresses; raw sockets only for a spawned
          # dnsmasq.
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
            "AF_UNIX"
            "AF_NETLINK"
          ]
          ++ lib.optional spawnsDnsmasq "AF_PACKET";
          # A spawned dnsmasq sets its capabilities (capset is in
          # @privileged) and reads /proc/net.
          SystemCallFilter = [
            "@system-service"
          ]
          ++ lib.optionals (!spawnsDnsmasq) [
            "~@privileged"
            "~@resources"
          ];
          ProcSubset = if spawnsDnsmasq then "all" else "pid";
        };
      };
    }

    (mkIf (pxe.enable && pxe.dnsmasq == "external") {
      systemd.services.provisioning-dnsmasq = {
        description = "Provisioning: proxy-DHCP and TFTP for PXE clients (dnsmasq)";
        # Lives and dies with the daemon, whose runtime directory holds the
        # dhcp-hostsdir; restarting the daemon restarts it too.
        wantedBy = [ "provisioning.service" ];
        bindsTo = [ "provisioning.service" ];
        partOf = [ "provisioning.service" ];
        requires = [ "sys-subsystem-net-devices-${utils.escapeSystemdPath pxe.interface}.device" ];
        wants = [ "network-online.target" ];
        after = [
          "provisioning.service"
          "network-online.target"
          "sys-subsystem-net-devices-${utils.escapeSystemdPath pxe.interface}.device"
        ];
        # dnsmasq is not sent SIGHUP (it has crashed on PXE tag changes);
        # per-MAC changes reach it through the hostsdir, anything structural
        # is a restart with a freshly rendered config.
        restartTriggers = [ settingsFile ];

        serviceConfig = hardening // {
          Type = "simple";
          RuntimeDirectory = "provisioning-dnsmasq";
          RuntimeDirectoryMode = "0700";
          ExecStartPre = [
            "${lib.getExe cfg.package} dnsmasq-config --config ${configPath} --out ${dnsmasqConf}"
            "${lib.getExe' pkgs.dnsmasq "dnsmasq"} --test --conf-file=${dnsmasqConf}"
          ];
          # The rendered config already says: no DNS, no lease file, no pid
          # file, log to stderr (the journal). Started as the unprivileged
          # dynamic user with just the capabilities below, dnsmasq never
          # changes user.
          ExecStart = "${lib.getExe' pkgs.dnsmasq "dnsmasq"} --keep-in-foreground --conf-file=${dnsmasqConf}";
          Restart = "on-failure";
          RestartSec = "2s";
          CapabilityBoundingSet = dnsmasqCapabilities;
          AmbientCapabilities = dnsmasqCapabilities;
          RestrictAddressFamilies = [
            "AF_INET"
            "AF_INET6"
            "AF_NETLINK"
            "AF_PACKET"
            "AF_UNIX"
          ];
          # Not "~@privileged" as for the daemon: dnsmasq checks and sets its
          # capabilities (capset is in @privileged).
          SystemCallFilter = [ "@system-service" ];
        };
      };
    })

    (mkIf cfg.openFirewall {
      networking.firewall.allowedTCPPorts = [ listenPort ];
      networking.firewall.interfaces = mkIf (pxe.enable && pxe.dnsmasq != "off") {
        ${pxe.interface}.allowedUDPPorts = [
          67
          69
          4011
        ];
      };
    })
  ]);

  meta = {
    doc = ./provisioning.md;
    maintainers = [ ];
  };
}
