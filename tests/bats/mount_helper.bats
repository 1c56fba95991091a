#!/usr/bin/env bats
# SPEC "Command line": mountable as `mount -t fuse.ckptfs SOURCE MNT -o ro` and from
# /etc/fstab (mount.fuse3 style), and `make install` installs the man page.
#
# mount(8) runs mount.fuse3, which runs `ckptfs SOURCE MNT -o OPTS` through /bin/sh with
# no PATH, i.e. sh's default search path.  So that no test touches the system, each mount
# test runs in a private mount namespace (unshare -m) where a directory holding a link to
# the ckptfs under test is bind-mounted over the first directory of that default path.

load helpers

setup() {
    [ "$(id -u)" = 0 ] || skip "mount(8) of a FUSE type needs root"
    command -v unshare >/dev/null || skip "unshare(1) is not installed"
    unshare -m true 2>/dev/null || skip "no private mount namespaces here (unshare -m)"
    [ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] || skip "mount.fuse3 is missing"
}

# in_ns SCRIPT: runs SCRIPT (bash) in a private mount namespace in which `ckptfs` on sh's
# default path is $CKPTFS; MNT and SRC are exported to it.  Whatever it mounts is
# unmounted when it exits, so the daemon it started exits too.
in_ns() {
    need_ckptfs
    local bin over
    bin=$(test_tmp)
    ln -s "$PWD/$CKPTFS" "$bin/ckptfs"
    for over in /usr/local/sbin /usr/local/bin; do
        [ -d "$over" ] && break
    done
    MNT=$(test_tmp)/mnt
    mkdir "$MNT"
    export MNT SRC PY BATS_PY FIX
    unshare -m --propagation private bash -ec "
        mount --bind '$bin' '$over'
        trap 'umount \"\$MNT\" 2>/dev/null || fusermount3 -u -z \"\$MNT\" 2>/dev/null || true' EXIT
        $1"
    MNT=
}

@test "mount -t fuse.ckptfs SOURCE MNT -o ro: reads every key, then umount" {
    SRC=$PWD/$FIX/dcp_dtensor_ws4
    in_ns '
        mount -t fuse.ckptfs "$SRC" "$MNT" -o ro,cache=16M
        grep -E "^ckptfs $MNT fuse.ckptfs ro[, ]" /proc/mounts
        timeout 120 "$PY" "$BATS_PY/check_manifest.py" "$MNT" "$FIX/dcp_dtensor_ws4.manifest.json" --src "$SRC"
        cmp "$MNT/.ckptfs/model.pt" <(cat "$MNT/.ckptfs/model.pt")
        umount "$MNT"
        ! mountpoint -q "$MNT"'
}

@test "an /etc/fstab line (mount -T FSTAB MNT): options mount(8) and mount.fuse3 pass on" {
    SRC=$PWD/$FIX/st_single/model.safetensors
    in_ns '
        printf "%s %s fuse.ckptfs ro,nofail,_netdev,noatime,nodev,nosuid,cache=8M,allow_other 0 0\n" \
            "$SRC" "$MNT" >"$MNT.fstab"
        mount -T "$MNT.fstab" "$MNT"
        grep -E "^ckptfs $MNT fuse.ckptfs ro,nosuid,nodev,noatime" /proc/mounts
        timeout 120 "$PY" "$BATS_PY/check_manifest.py" "$MNT" "$FIX/st_single.manifest.json"
        umount "$MNT"
        ! mountpoint -q "$MNT"'
}

@test "mount -t fuse.ckptfs of a bad SOURCE fails with ckptfs's one line" {
    SRC=/nonexistent/ckpt
    in_ns '
        if out=$(mount -t fuse.ckptfs "$SRC" "$MNT" -o ro 2>&1); then exit 1; fi
        echo "$out"
        echo "$out" | grep -q "^ckptfs: /nonexistent/ckpt"
        ! mountpoint -q "$MNT"'
}

@test "make install puts the binary and a man page that renders without warnings" {
    local dest
    dest=$(test_tmp)
    make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
    [ -x "$dest/usr/local/bin/ckptfs" ]
    [ -f "$dest/usr/local/share/man/man1/ckptfs.1" ]
    command -v groff >/dev/null || skip "groff is not installed (the page is there)"
    run groff -man -Tutf8 -ww -z "$dest/usr/local/share/man/man1/ckptfs.1"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    if command -v man >/dev/null; then
        run bash -c "MANWIDTH=80 man --warnings -l '$dest/usr/local/share/man/man1/ckptfs.1' 2>&1 >/dev/null"
        [ -z "$output" ]
        MANWIDTH=80 man -l "$dest/usr/local/share/man/man1/ckptfs.1" 2>/dev/null | grep -q "ckptfs cp"
    fi
}
