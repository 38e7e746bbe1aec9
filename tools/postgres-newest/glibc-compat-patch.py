#!/usr/bin/env python3
"""Let a shared object built against glibc >= 2.38 load on glibc 2.36 (Debian 12).

Debian sid's PostgreSQL 18 extension packages (postgresql-18-cron, postgresql-18-pgvector) are
built with glibc 2.38+, whose headers (with _GNU_SOURCE) redirect sscanf/strtol/... to the new
C23 entry points __isoc23_sscanf@GLIBC_2.38, __isoc23_strtol@GLIBC_2.38, ... Those differ from
the classic functions only in accepting C23 binary literals ("0b101") for %i / base 0 / base 2.
This script, in place:
  * renames each undefined __isoc23_X symbol of the file's .dynstr to X (same signature;
    in-place, the new name is a suffix of the old one, so no string table grows),
  * makes those symbols unversioned (.gnu.version index 1 = global, binding to the default
    X@@GLIBC_2.2.5),
  * unlinks the file's now unused GLIBC_2.37+ version needs (Vernaux entries) from its
    .gnu.version_r, so ld.so does not refuse the file for a version Debian 12's libc lacks.
Any other symbol needing glibc > MAX (2.36 by default) is an error: the file is left unchanged.
Usage: glibc-compat-patch.py [--max 2.36] [--check] FILE.so...
  --check  only report; exit 1 when a file needs a newer glibc than MAX and cannot be patched.
"""

import struct
import sys

SHT_DYNSYM, SHT_VERSYM, SHT_VERNEED = 11, 0x6FFFFFFF, 0x6FFFFFFE
PREFIX = b"__isoc23_"


def cstr(buf, off):
    return bytes(buf[off : buf.index(b"\0", off)])


def glibc_minor(name):
    if name.startswith(b"GLIBC_2."):
        try:
            return int(name[8:].split(b".")[0])
        except ValueError:
            return None
    return None


def patch(path, max_minor, check_only):
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    if buf[:4] != b"\x7fELF" or buf[4] != 2 or buf[5] != 1:
        raise SystemExit(f"{path}: not a little-endian ELF64 file")
    (e_shoff,) = struct.unpack_from("<Q", buf, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", buf, 0x3A)
    secs = []
    for i in range(e_shnum):
        (name, typ, flags, addr, off, size, link, info, align, entsize) = struct.unpack_from(
            "<IIQQQQIIQQ", buf, e_shoff + i * e_shentsize
        )
        secs.append(dict(type=typ, off=off, size=size, link=link, entsize=entsize))
    dynsym = next(s for s in secs if s["type"] == SHT_DYNSYM)
    versym = next((s for s in secs if s["type"] == SHT_VERSYM), None)
    verneed = next((s for s in secs if s["type"] == SHT_VERNEED), None)
    if versym is None or verneed is None:
        print(f"{path}: no symbol versions, nothing to do")
        return 0
    dynstr = secs[dynsym["link"]]["off"]
    vstr = secs[verneed["link"]]["off"]

    # version index -> (name, offset of its Vernaux entry)
    bad = {}
    off = verneed["off"]
    while True:
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", buf, off)
        aux, prev = off + vn_aux, None
        for _ in range(vn_cnt):
            vna_hash, vna_flags, vna_other, vna_name, vna_next = struct.unpack_from(
                "<IHHII", buf, aux
            )
            vname = cstr(buf, vstr + vna_name)
            minor = glibc_minor(vname)
            if minor is not None and minor > max_minor:
                bad[vna_other] = (vname, aux, off, prev)
            prev = aux
            aux += vna_next
            if not vna_next:
                break
        if not vn_next:
            break
        off += vn_next
    if not bad:
        print(f"{path}: needs no glibc newer than 2.{max_minor}")
        return 0

    nsyms = dynsym["size"] // 24
    fixes, blockers = [], []
    for i in range(nsyms):
        st_name, st_info, st_other, st_shndx = struct.unpack_from(
            "<IBBH", buf, dynsym["off"] + i * 24
        )
        (ver,) = struct.unpack_from("<H", buf, versym["off"] + 2 * i)
        if (ver & 0x7FFF) not in bad:
            continue
        sname = cstr(buf, dynstr + st_name)
        vname = bad[ver & 0x7FFF][0].decode()
        if st_shndx == 0 and sname.startswith(PREFIX) and len(sname) > len(PREFIX):
            fixes.append((i, st_name, sname, vname))
        else:
            blockers.append(f"{sname.decode()}@{vname}")
    for _i, _st_name, sname, vname in fixes:
        print(f"{path}: {sname.decode()}@{vname} -> {sname[len(PREFIX) :].decode()} (unversioned)")
    if blockers:
        print(f"{path}: cannot patch, needs: {', '.join(blockers)}", file=sys.stderr)
        return 1
    if check_only:
        return 0
    for i, st_name, sname, _vname in fixes:
        new = sname[len(PREFIX) :] + b"\0"
        buf[dynstr + st_name : dynstr + st_name + len(new)] = new
        struct.pack_into("<H", buf, versym["off"] + 2 * i, 1)
    # Unlink the bad Vernaux entries, last first so earlier offsets stay valid.
    for vname, aux, vn, prev in sorted(bad.values(), key=lambda b: -b[1]):
        vn_cnt, vn_aux = (
            struct.unpack_from("<H", buf, vn + 2)[0],
            struct.unpack_from("<I", buf, vn + 8)[0],
        )
        (nxt,) = struct.unpack_from("<I", buf, aux + 12)
        if prev is None:  # first of its file's list: vn_aux skips it
            struct.pack_into("<I", buf, vn + 8, vn_aux + nxt if nxt else 0)
        else:
            (prev_next,) = struct.unpack_from("<I", buf, prev + 12)
            struct.pack_into("<I", buf, prev + 12, prev_next + nxt if nxt else 0)
        struct.pack_into("<H", buf, vn + 2, vn_cnt - 1)
        print(f"{path}: version need {vname.decode()} removed")
    tmp = path + ".glibc-compat.tmp"
    with open(tmp, "wb") as f:
        f.write(buf)
    import os

    os.chmod(tmp, os.stat(path).st_mode)
    os.replace(tmp, path)
    return 0


def main(argv):
    max_minor, check_only, files = 36, False, []
    it = iter(argv)
    for a in it:
        if a == "--max":
            max_minor = int(next(it).split(".")[1])
        elif a == "--check":
            check_only = True
        else:
            files.append(a)
    if not files:
        raise SystemExit(__doc__)
    return max(patch(f, max_minor, check_only) for f in files)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
