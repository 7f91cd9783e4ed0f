#!/usr/bin/env bash
# Real Linux test hosts for the Bacalhau roles: systemd-nspawn machines booted from a Debian
# bookworm rootfs (Debian's packages only), each in its own network namespace on a private
# bridge, with sshd and an `ubuntu` user with passwordless sudo, as on a cloud image.
#
#   tests/hosts/testhosts.sh build          build (or reuse) the cached rootfs tarball
#   tests/hosts/testhosts.sh up N           bring up hosts testhost1..N (default 3)
#   tests/hosts/testhosts.sh status         list hosts and whether sshd answers
#   tests/hosts/testhosts.sh down           stop everything and remove all traces
#   tests/hosts/testhosts.sh image          print the test image's name (in the registry below)
#
# Needs root and tests/hosts/install-deps.sh. Environment:
#   BACALHAU_TESTHOSTS_STATE   state dir (ssh key, inventory, host roots)  [/tmp/bacalhau-testhosts]
#   BACALHAU_TESTHOSTS_CACHE   where the rootfs tarball is cached          [/var/cache/bacalhau-testhosts]
#   BACALHAU_TESTHOSTS_MIRROR  Debian mirror for debootstrap      [first URI of the machine's apt sources]
#   BACALHAU_TESTHOSTS_NAT     1 = masquerade the bridge to the uplink so hosts can reach the Debian
#                              mirror (apt); 0 = hosts only reach the controller            [1]
#   BACALHAU_TESTHOSTS_SUBNET  S in 10.213.S.0/24, so that several environments (each with its own
#                              STATE) can be up on one machine at once                     [7]
# Every host has an EC2 instance metadata service (IMDSv2) at 169.254.169.254 inside its own
# namespace (tests/hosts/imds_standin.py, run on this machine in that namespace). It answers from
# $STATE/imds/<host address>.json, which the AWS emulator writes for the instance it launched on
# that address (POST /_emulator/imds {"state_dir": "$STATE/imds"}); without one it answers 404.
# When that instance is terminated, the stand-in powers its host off.
# Every environment has a Docker registry (Debian's docker-registry, plain HTTP) on the controller's
# side of its bridge, $GW:5213, known to the hosts as registry.testhosts:5213 (an /etc/hosts line,
# and an insecure-registries entry in the hosts' /etc/docker/daemon.json, written by `up`). `up`
# pushes the test world's one image there (tests/hosts/registry_image.py: Debian's busybox-static)
# and every host pulls it at boot, so it carries RepoDigests as a pulled image does:
#   registry.testhosts:5213/testhost/busybox:1.35 (also tagged localhost/testhost/busybox:1.35,
#   the name the test world used before: the same image, with the same RepoDigests).
# Addresses: bridge bacbr0 = 10.213.7.1/24 (the controller's side), testhostI = 10.213.7.(10+I);
# with another SUBNET S: bridge bacbrS, 10.213.S.0/24, namespaces bacalhau-testhostsS-I, veths vbSt I.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

STATE=${BACALHAU_TESTHOSTS_STATE:-/tmp/bacalhau-testhosts}
CACHE=${BACALHAU_TESTHOSTS_CACHE:-/var/cache/bacalhau-testhosts}
NAT=${BACALHAU_TESTHOSTS_NAT:-1}
SUBNET=${BACALHAU_TESTHOSTS_SUBNET:-7}
[[ $SUBNET =~ ^[0-9]{1,3}$ ]] && ((SUBNET >= 1 && SUBNET <= 254)) || { echo "BACALHAU_TESTHOSTS_SUBNET must be 1..254" >&2; exit 2; }
if [[ $SUBNET == 7 ]]; then BRIDGE=bacbr0 TAG=bacalhau-testhosts VETH=vbt
else BRIDGE=bacbr$SUBNET TAG=bacalhau-testhosts$SUBNET VETH=vb${SUBNET}t; fi
NET=10.213.$SUBNET
GW=$NET.1
SUITE=bookworm
# The rootfs cache is shared by every environment.
# Bump when the rootfs recipe below changes: the cached tarball's name carries it.
ROOTFS_REV=4
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,python3-yaml,sudo,iproute2,ca-certificates,curl,procps,iptables,docker.io,containerd,runc,tini,less,busybox-static
ROOTFS_TAR=$CACHE/rootfs-$SUITE-r$ROOTFS_REV-$(dpkg --print-architecture).tar.zst
REGISTRY_NAME=registry.testhosts
REGISTRY_PORT=5213  # not 5000: the docker-registry package's own service listens there on all addresses
REGISTRY=$REGISTRY_NAME:$REGISTRY_PORT
IMAGE=$REGISTRY/testhost/busybox:1.35

log() { printf '[testhosts] %s\n' "$*" >&2; }
die() { printf '[testhosts] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == image ]]; then echo "$IMAGE"; exit 0; fi
[[ $(id -u) == 0 ]] || die "must run as root"

mirror() {
  if [[ -n ${BACALHAU_TESTHOSTS_MIRROR:-} ]]; then echo "$BACALHAU_TESTHOSTS_MIRROR"; return; fi
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v security | grep -oE 'https?://[^ ]+/debian/?' | head -n1 || true)
  [[ -n $uri ]] || die "no Debian mirror in the apt sources; set BACALHAU_TESTHOSTS_MIRROR"
  echo "$uri"
}

cmd_build() {
  if [[ -s $ROOTFS_TAR ]]; then log "rootfs cached: $ROOTFS_TAR"; return; fi
  for b in debootstrap systemd-nspawn zstd iptables; do
    command -v "$b" >/dev/null || die "$b missing: run tests/hosts/install-deps.sh"
  done
  mkdir -p "$CACHE"
  local root=$CACHE/build.$$
  rm -rf "$root"
  log "debootstrap $SUITE (minbase + $PACKAGES) from $(mirror); takes a few minutes once"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$(mirror)" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
  # The cloud-image shape: an `ubuntu` user with passwordless sudo, key-only sshd.
  chroot "$root" useradd -m -s /bin/bash -G sudo ubuntu
  echo 'ubuntu ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/90-ubuntu"
  chmod 0440 "$root/etc/sudoers.d/90-ubuntu"
  cat >"$root/etc/ssh/sshd_config.d/testhost.conf" <<'EOF'
PasswordAuthentication no
PermitRootLogin no
UseDNS no
EOF
  # Host keys are made per host at first boot (so each host has its own).
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/systemd/system/testhost-sshkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
  # Docker inside nspawn needs writable cgroup mounts: nspawn mounts them read-only, and a plain
  # `remount,rw` answers "mount point is busy", so each is bind-remounted read-write before docker.
  cat >"$root/etc/systemd/system/testhost-cgroups.service" <<'EOF'
[Unit]
Description=Remount cgroup filesystems read-write (test host inside systemd-nspawn)
DefaultDependencies=no
Before=containerd.service docker.service
After=local-fs.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/testhost-cgroups
[Install]
WantedBy=sysinit.target
EOF
  cat >"$root/usr/local/sbin/testhost-cgroups" <<'EOF'
#!/bin/sh
for m in $(awk '$2 ~ "^/sys/fs/cgroup" {print $2}' /proc/self/mounts); do
  mount -o remount,bind,rw "$m" 2>/dev/null || true
done
exit 0
EOF
  chmod 0755 "$root/usr/local/sbin/testhost-cgroups"
  # No image can be pulled from the internet here: every host gets one local image, made from
  # Debian's busybox-static (the binary and its applet links) with `docker import`, once Docker
  # runs. Bacalhau uses an image that is already on the node (pkg/docker/docker.go).
  # `up` now replaces this script in each host's own copy with one that pulls the image from the
  # environment's registry (registry_client, below): an imported image has no RepoDigests, and
  # Bacalhau v1.9.3 would then ask its registry. Kept here so that the cached rootfs (ROOTFS_REV)
  # stays the one every environment shares.
  cat >"$root/usr/local/sbin/testhost-image" <<'EOF'
#!/bin/sh
# Import the test world's local image into Docker, once.
set -e
IMAGE=${1:-localhost/testhost/busybox:1.35}
docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
d=$(mktemp -d)
mkdir -p "$d/bin" "$d/tmp"
cp /bin/busybox "$d/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
tar -C "$d" -cf - . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
rm -rf "$d"
EOF
  chmod 0755 "$root/usr/local/sbin/testhost-image"
  cat >"$root/etc/systemd/system/testhost-image.service" <<'EOF'
[Unit]
Description=Import the test world's local Docker image (no registry is reachable)
After=docker.service
Wants=docker.service
ConditionPathExists=/usr/bin/docker
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/testhost-image
[Install]
WantedBy=multi-user.target
EOF
  chroot "$root" systemctl enable testhost-sshkeys.service testhost-cgroups.service testhost-image.service ssh.service >/dev/null 2>&1
  # Nothing a container can't do, and nothing that slows boot.
  for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
           fstrim.timer systemd-resolved.service getty@tty1.service console-getty.service; do
    chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
  done
  echo 'nameserver 127.0.0.1' >"$root/etc/resolv.conf.testhost"  # replaced at `up`
  : >"$root/etc/machine-id"
  rm -rf "$root"/var/cache/apt/archives/*.deb
  log "packing $ROOTFS_TAR"
  tar -C "$root" --numeric-owner --xattrs -cf - . | zstd -q -T0 -3 -o "$ROOTFS_TAR.tmp"
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$root"
  log "rootfs built: $(du -h "$ROOTFS_TAR" | cut -f1)"
}

uplink() { ip -4 route show default | awk '{for(i=1;i<=NF;i++) if($i=="dev"){print $(i+1); exit}}'; }

net_up() {
  # Every host's systemd and sshd take inotify instances from this machine's per-user limit (128 by
  # default): with many hosts up (several environments, or 9 hosts for make bench-cluster) boots
  # failed with "Too many open files". Raise it while hosts are up; `down` puts it back.
  local inotify; inotify=$(cat /proc/sys/fs/inotify/max_user_instances)
  if ((inotify < 1024)); then
    [[ -f $STATE/inotify.orig ]] || echo "$inotify" >"$STATE/inotify.orig"
    echo 1024 >/proc/sys/fs/inotify/max_user_instances
  fi
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$GW/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  if [[ $NAT == 1 ]] && ! iptables -t nat -C POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE \
       -m comment --comment "$TAG" 2>/dev/null; then
    local up; up=$(uplink)
    if [[ -n $up ]]; then
      cat /proc/sys/net/ipv4/ip_forward >"$STATE/ip_forward.orig"
      echo 1 >/proc/sys/net/ipv4/ip_forward
      iptables -t nat -A POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment "$TAG"
      iptables -A FORWARD -i "$BRIDGE" -o "$up" -j ACCEPT -m comment --comment "$TAG"
      iptables -A FORWARD -i "$up" -o "$BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT \
        -m comment --comment "$TAG"
    fi
  fi
}

host_up() {
  local i=$1 name=testhost$1 ip=$NET.$((10 + $1))
  local hd=$STATE/hosts/$name root=$STATE/hosts/$name/root ns=$TAG-$1
  if [[ -f $hd/pid ]] && kill -0 "$(cat "$hd/pid")" 2>/dev/null; then log "$name already up"; return; fi
  rm -rf "$hd"; mkdir -p "$root"
  zstd -q -dc "$ROOTFS_TAR" | tar -C "$root" --numeric-owner --xattrs -xf -
  echo "$name" >"$root/etc/hostname"
  printf '127.0.0.1 localhost\n%s %s\n' "$ip" "$name" >"$root/etc/hosts"
  for j in $(seq 1 "$N"); do printf '%s testhost%s\n' "$NET.$((10 + j))" "$j" >>"$root/etc/hosts"; done
  printf '%s %s\n' "$GW" "$REGISTRY_NAME" >>"$root/etc/hosts"
  sort -u -o "$root/etc/hosts" "$root/etc/hosts"
  grep -E '^nameserver' /etc/resolv.conf >"$root/etc/resolv.conf" || true
  # The cgroup mounts must be read-write whenever containerd or Docker (re)starts, not only once at
  # boot: a run of the sandbox saw Docker meet a read-only cpuset hierarchy after boot.
  local u
  for u in containerd docker; do
    mkdir -p "$root/etc/systemd/system/$u.service.d"
    printf '[Service]\nExecStartPre=/usr/local/sbin/testhost-cgroups\n' >"$root/etc/systemd/system/$u.service.d/testhost-cgroups.conf"
  done
  registry_client "$root"
  install -d -m 0700 -o 1000 -g 1000 "$root/home/ubuntu/.ssh"
  install -m 0600 -o 1000 -g 1000 "$STATE/id_ed25519.pub" "$root/home/ubuntu/.ssh/authorized_keys"
  # Network namespace with a veth on the bridge; the address lives in the namespace, so the
  # host's systemd needs no network configuration.
  ip netns add "$ns" 2>/dev/null || true
  ip link del "$VETH$i" 2>/dev/null || true  # a host that powered off left its veth behind
  ip link add "$VETH$i" type veth peer name eth0 netns "$ns"
  ip link set "$VETH$i" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$GW"
  imds_up "$i" "$ns" "$ip"
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 setsid systemd-nspawn -b -D "$root" -M "$name" \
    --register=no --keep-unit --network-namespace-path="/run/netns/$ns" \
    --capability=all --system-call-filter=@keyring --console=read-only --resolv-conf=off --timezone=off \
    >"$hd/console.log" 2>&1 </dev/null &
  echo $! >"$hd/pid"
  echo "$ip" >"$hd/ip"
}

# The environment's registry: docker-registry on $GW:$REGISTRY_PORT (plain HTTP, storage in the
# state dir), with the test image pushed. Started before the hosts boot, since they pull at boot.
registry_up() {
  local dir=$STATE/registry
  mkdir -p "$dir/data"
  if ! { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }; then
    command -v docker-registry >/dev/null || die "docker-registry missing: run tests/hosts/install-deps.sh"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $GW:$REGISTRY_PORT
EOF
    # In a subshell, so that it is not a child of this shell: cmd_up's `wait` would wait for it.
    (setsid docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 </dev/null & echo $! >"$dir/pid")
  fi
  python3 "$HERE/registry_image.py" --rootfs "$ROOTFS_TAR" --cache "$CACHE" --registry "$GW:$REGISTRY_PORT" \
    --image "${IMAGE#"$REGISTRY"/}" >"$dir/digest" || { tail -5 "$dir/log" >&2; die "pushing the test image failed"; }
  log "registry $GW:$REGISTRY_PORT ($REGISTRY on the hosts): ${IMAGE#"$REGISTRY"/} $(cat "$dir/digest")"
}

# A host's side of the registry: Docker may use it over plain HTTP, and the boot unit that used
# to `docker import` the image (testhost-image.service, in the rootfs) now pulls it instead. The
# rootfs is left as it is (shared by every environment); these files are written into the host's
# own copy before it boots.
registry_client() {
  local root=$1
  mkdir -p "$root/etc/docker"
  printf '{\n  "insecure-registries": ["%s"]\n}\n' "$REGISTRY" >"$root/etc/docker/daemon.json"
  cat >"$root/usr/local/sbin/testhost-image" <<EOF
#!/bin/sh
# Pull the test world's image from the environment's registry (written by tests/hosts/testhosts.sh).
IMAGE=$IMAGE
i=0
until docker image inspect "\$IMAGE" >/dev/null 2>&1 || docker pull -q "\$IMAGE" >/dev/null; do
  i=\$((i + 1)); [ \$i -ge 30 ] && exit 1; sleep 2
done
docker tag "\$IMAGE" localhost/testhost/busybox:1.35
EOF
  chmod 0755 "$root/usr/local/sbin/testhost-image"
}

# The host's IMDS stand-in: 169.254.169.254 on the namespace's loopback (so it is the host's own
# address, and nothing leaves the namespace for it), one server per host, kept across a host's
# power-off and return (its pid file lives outside the host's directory).
imds_up() {
  local i=$1 ns=$2 ip=$3 run=$STATE/imds/run
  mkdir -p "$run"
  ip -n "$ns" addr add 169.254.169.254/32 dev lo 2>/dev/null || true
  if [[ -f $run/testhost$i.pid ]] && kill -0 "$(cat "$run/testhost$i.pid")" 2>/dev/null; then return; fi
  setsid ip netns exec "$ns" python3 "$HERE/imds_standin.py" --state-dir "$STATE/imds" --address "$ip" \
    --poweroff-pid-file "$STATE/hosts/testhost$i/pid" >>"$run/testhost$i.log" 2>&1 </dev/null &
  echo $! >"$run/testhost$i.pid"
}

wait_ssh() {
  local name=$1 ip=$2 deadline=$((SECONDS + 90))
  while ((SECONDS < deadline)); do
    if ssh -n -q -i "$STATE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 "ubuntu@$ip" true 2>/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  tail -30 "$STATE/hosts/$name/console.log" >&2 || true
  die "$name ($ip): sshd did not answer within 90 s"
}

# The host pulled the test image (testhost-image.service); a host that cannot fails `up`.
wait_image() {
  local name=$1 ip=$2 deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do
    if ssh -n -q -i "$STATE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 "ubuntu@$ip" \
         "sudo docker image inspect --format '{{.RepoDigests}}' $IMAGE" 2>/dev/null | grep -q @sha256:; then
      return 0
    fi
    sleep 1
  done
  die "$name ($ip): did not pull $IMAGE within 120 s (journalctl -u testhost-image on the host)"
}

write_inventory() {
  {
    echo "# Written by tests/hosts/testhosts.sh; the hosts are systemd-nspawn test machines."
    echo "all:"
    echo "  vars:"
    echo "    ansible_user: ubuntu"
    echo "    ansible_ssh_private_key_file: $STATE/id_ed25519"
    echo "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "  hosts:"
    for hd in "$STATE"/hosts/testhost*; do
      [[ -f $hd/ip ]] || continue
      echo "    $(basename "$hd"):"
      echo "      ansible_host: $(cat "$hd/ip")"
    done
  } >"$STATE/inventory.yml"
}

cmd_up() {
  N=${1:-3}
  if ! [[ $N =~ ^[0-9]+$ ]] || ((N < 1 || N > 50)); then die "usage: $0 up N (1..50)"; fi
  cmd_build
  mkdir -p "$STATE/hosts"
  [[ -f $STATE/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C "$TAG" -f "$STATE/id_ed25519"
  net_up
  registry_up
  local t0=$SECONDS i
  for i in $(seq 1 "$N"); do host_up "$i" & done
  wait
  for i in $(seq 1 "$N"); do wait_ssh "testhost$i" "$NET.$((10 + i))"; done
  for i in $(seq 1 "$N"); do wait_image "testhost$i" "$NET.$((10 + i))"; done
  write_inventory
  log "$N host(s) up in $((SECONDS - t0)) s; inventory: $STATE/inventory.yml"
}

cmd_status() {
  local hd name ip pid state
  for hd in "$STATE"/hosts/testhost*; do
    [[ -d $hd ]] || continue
    name=$(basename "$hd"); ip=$(cat "$hd/ip" 2>/dev/null || echo -); pid=$(cat "$hd/pid" 2>/dev/null || echo 0)
    state=down
    if kill -0 "$pid" 2>/dev/null; then
      state=running
      ssh -n -q -i "$STATE/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 "ubuntu@$ip" true 2>/dev/null && state="running ssh-ok"
    fi
    printf '%-12s %-14s %s\n' "$name" "$ip" "$state"
  done
}

# PIDs of the nspawn machines this script started: from the pid files, and (should the state
# dir be gone) any systemd-nspawn whose command line names one of our namespaces.
our_pids() {
  local hd p cmd
  for hd in "$STATE"/hosts/testhost*; do
    [[ -f $hd/pid ]] && cat "$hd/pid"
  done
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $cmd == *systemd-nspawn*"--network-namespace-path=/run/netns/$TAG-"* ]] && echo "${p#/proc/}"
  done
  return 0
}

cmd_down() {
  local pid i pids
  pids=$(our_pids | sort -u)
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $pids; do
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in $(cat "$STATE"/imds/run/*.pid 2>/dev/null) $(pgrep -f "imds_standin.py --state-dir $STATE/imds " || true); do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $(cat "$STATE/registry/pid" 2>/dev/null) $(pgrep -f "docker-registry serve $STATE/registry/config.yml" || true); do
    kill -TERM "$pid" 2>/dev/null || true
  done
  # Leftover mounts from docker inside the hosts (overlay, netns) would keep the roots busy.
  if [[ -d $STATE/hosts ]]; then
    { grep -oE " $STATE/hosts/[^ ]+" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$TAG-" || true); do ip netns del "$ns"; done
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$VETH[0-9]+\$" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  local t rule
  for t in nat filter; do
    while rule=$(iptables -t "$t" -S 2>/dev/null | grep -E -- "--comment $TAG( |$)" | head -n1) && [[ -n $rule ]]; do
      # shellcheck disable=SC2086
      eval iptables -t "$t" ${rule/-A /-D }
    done
  done
  if [[ -f $STATE/ip_forward.orig ]]; then cat "$STATE/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward; fi
  # Only when no other environment still has hosts up (they share the limit).
  if [[ -f $STATE/inotify.orig ]] && ! pgrep -f 'systemd-nspawn.*--network-namespace-path=/run/netns/bacalhau-testhosts' >/dev/null; then
    cat "$STATE/inotify.orig" >/proc/sys/fs/inotify/max_user_instances
  fi
  rm -rf "$STATE"
  log "down: no hosts, registry, namespaces, bridge or rules left"
}

case ${1:-} in
  build) cmd_build ;;
  up) shift; cmd_up "${1:-3}" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  inventory) echo "$STATE/inventory.yml" ;;
  *) echo "usage: $0 {build|up N|status|down|inventory|image}" >&2; exit 2 ;;
esac
