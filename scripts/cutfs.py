#!/usr/bin/env python3
"""cutfs: a FUSE filesystem that loses every write not fsynced, like a power cut.

    cutfs.py BACKING MOUNTPOINT

Mounts BACKING at MOUNTPOINT. Namespace changes (create, mkdir, rename, unlink,
rmdir, chmod) go straight to BACKING, as a journaling filesystem's metadata
would; file data does not. Every write lands in this process's memory, page by
page, and reaches BACKING only when its file is fsynced (or fdatasynced). A
"power cut" is this process ending: SIGKILL it (then `umount -l MOUNTPOINT`),
and what BACKING holds is exactly what was synced. Mount it again on the same
BACKING to restart on what survived. This is the model of LazyFS: a page cache
in user space that a cut empties.

So that no unsynced write survives in the kernel instead, the mount keeps the
kernel's writeback cache off (libfuse 2 never turns it on), attribute and entry
caching at 0, and reads uncached (direct_io), so every read comes here.

Writes to a file that was never synced, and then renamed, lose their data at a
cut: the renamed file is there, with what was synced under either name (often
nothing). A program that wants a file to survive syncs it before the rename.

Single-threaded: FUSE serializes every operation, so no locking is needed.
Needs libfuse 2 (Debian's libfuse2) and fusepy; runs as root or with fusermount.
"""

import errno
import os
import sys

from fuse import FUSE, FuseOSError, Operations  # fusepy

PAGE = 4096


class Dirty:
    """The unsynced state of one file: its size and the pages written since the last
    sync (each a full PAGE, zero-padded past the end)."""

    __slots__ = ("size", "pages")

    def __init__(self, size):
        self.size = size
        self.pages = {}


class CutFs(Operations):
    def __init__(self, backing):
        self.backing = os.path.realpath(backing)
        self.dirty = {}  # path (as FUSE names it) -> Dirty
        self.syncs = 0

    # -- helpers ----------------------------------------------------------------

    def _real(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _read_backing(self, path, offset, length):
        """Bytes [offset, offset+length) of the synced file, shorter at its end."""
        try:
            fd = os.open(self._real(path), os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def _dirty(self, path):
        d = self.dirty.get(path)
        if d is None:
            d = Dirty(os.lstat(self._real(path)).st_size)
            self.dirty[path] = d
        return d

    def _page(self, path, d, index):
        page = d.pages.get(index)
        if page is None:
            start = index * PAGE
            if start < d.size:
                page = bytearray(self._read_backing(path, start, min(PAGE, d.size - start)))
            else:
                page = bytearray()
            page.extend(b"\0" * (PAGE - len(page)))
            d.pages[index] = page
        return page

    def _sync(self, path):
        d = self.dirty.pop(path, None)
        if d is None:
            return
        fd = os.open(self._real(path), os.O_WRONLY)
        try:
            for index in sorted(d.pages):
                start = index * PAGE
                if start >= d.size:
                    continue
                page = d.pages[index]
                os.pwrite(fd, bytes(page[: min(PAGE, d.size - start)]), start)
            os.ftruncate(fd, d.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.syncs += 1

    def _move_dirty(self, old, new):
        moved = {}
        for path in list(self.dirty):
            if path == old or path.startswith(old + "/"):
                moved[new + path[len(old):]] = self.dirty.pop(path)
        for path in list(self.dirty):
            if path == new or path.startswith(new + "/"):
                del self.dirty[path]
        self.dirty.update(moved)

    # -- namespace: straight to the backing directory -----------------------------

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._real(path))
        except OSError as e:
            raise FuseOSError(e.errno)
        attrs = {
            key: getattr(st, key)
            for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime", "st_mtime", "st_ctime",
            )
        }
        d = self.dirty.get(path)
        if d is not None:
            attrs["st_size"] = d.size
        attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
        return attrs

    def access(self, path, amode):
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)

    def rmdir(self, path):
        os.rmdir(self._real(path))

    def unlink(self, path):
        os.unlink(self._real(path))
        self.dirty.pop(path, None)

    def rename(self, old, new):
        os.rename(self._real(old), self._real(new))
        self._move_dirty(old, new)

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._real(path), times)

    def symlink(self, target, source):
        os.symlink(source, self._real(target))

    def readlink(self, path):
        return os.readlink(self._real(path))

    def link(self, target, source):
        raise FuseOSError(errno.EPERM)

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax",
            )
        }

    # -- files: data lives here until fsync ----------------------------------------

    def create(self, path, mode, fi=None):
        fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.close(fd)
        self.dirty.pop(path, None)
        return 0

    def open(self, path, flags):
        if not os.path.exists(self._real(path)):
            raise FuseOSError(errno.ENOENT)
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def read(self, path, size, offset, fh):
        d = self.dirty.get(path)
        if d is None:
            return self._read_backing(path, offset, size)
        end = min(offset + size, d.size)
        if offset >= end:
            return b""
        out = bytearray()
        index = offset // PAGE
        while index * PAGE < end:
            start = index * PAGE
            page = d.pages.get(index)
            if page is None:
                chunk = self._read_backing(path, start, PAGE)
                chunk = chunk + b"\0" * (PAGE - len(chunk))
            else:
                chunk = page
            lo = max(offset, start) - start
            hi = min(end, start + PAGE) - start
            out += chunk[lo:hi]
            index += 1
        return bytes(out)

    def write(self, path, data, offset, fh):
        d = self._dirty(path)
        pos = 0
        while pos < len(data):
            at = offset + pos
            index, within = divmod(at, PAGE)
            take = min(PAGE - within, len(data) - pos)
            page = self._page(path, d, index)
            page[within : within + take] = data[pos : pos + take]
            pos += take
        d.size = max(d.size, offset + len(data))
        return len(data)

    def truncate(self, path, length, fh=None):
        d = self._dirty(path)
        if length < d.size:
            index, within = divmod(length, PAGE)
            if within:
                page = self._page(path, d, index)
                page[within:] = b"\0" * (PAGE - within)
            for i in [i for i in d.pages if i * PAGE >= length]:
                if i != index or within == 0:
                    del d.pages[i]
            # Pages past the old end read as zeros from here on, not as synced bytes.
            for i in range((length + PAGE - 1) // PAGE, (d.size + PAGE - 1) // PAGE):
                d.pages.setdefault(i, bytearray(PAGE))
        d.size = length

    def fsync(self, path, datasync, fh):
        self._sync(path)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0


def main():
    if len(sys.argv) != 3:
        print("usage: cutfs.py BACKING MOUNTPOINT", file=sys.stderr)
        sys.exit(2)
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(
        CutFs(backing),
        mountpoint,
        foreground=True,
        nothreads=True,
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        big_writes=True,
        max_write=131072,
        fsname="cutfs",
    )


if __name__ == "__main__":
    main()
