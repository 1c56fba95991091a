# ckptfs build.  `make` builds build/ckptfs, build/libckptplanner.a and build/libckptfs_fs.a;
# `make test` builds ASan/UBSan variants and runs every test.
CC      ?= cc
PREFIX  ?= /usr/local
PKGS    := fuse3 libzstd libcjson libcurl
# pkg-config is looked up lazily so `make deps` works before it is installed.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lz -lpthread -lm

WARN    := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wformat=2
DEFS    := -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -DFUSE_USE_VERSION=31
OPT     ?= -O2 -g
# WERROR=1 (CI sets it) makes every warning an error.  Off by default: a newer compiler's new
# warnings must not break a user's plain build.
ifeq ($(WERROR),1)
WARN    += -Werror
endif
CFLAGS_ALL = -std=gnu11 $(WARN) $(DEFS) $(PKG_CFLAGS) -Iplanner -Ifs $(CFLAGS)
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

PLANNER_SRC := $(sort $(wildcard planner/*.c))
FS_SRC      := $(sort $(wildcard fs/*.c))
# The fs/ files that include <fuse.h> or <fuse_lowlevel.h> (directly or through notify.h/ops.h):
# only the daemon links them.  Every other fs/*.c goes into libckptfs_fs.a, which unit tests
# link without a mount, so a new FUSE-free file lands there with no edit here.  A library file
# that starts including a FUSE header fails its compile (FUSE_FREE_CHECK) until it is listed.
FS_FUSE_SRC := fs/main.c fs/notify.c fs/ll_ops.c fs/ll_readdir.c fs/ops_read.c fs/ops_write.c \
               $(wildcard fs/wr_*.c) fs/live.c fs/root.c fs/run.c
FS_LIB_SRC  := $(filter-out $(FS_FUSE_SRC),$(FS_SRC))
FS_EXE_SRC  := $(filter $(FS_FUSE_SRC),$(FS_SRC))
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
HEADERS     := $(wildcard planner/*.h fs/*.h tests/unit/*.h)

REL_PLANNER_OBJ := $(PLANNER_SRC:%.c=build/rel/%.o)
REL_FSLIB_OBJ   := $(FS_LIB_SRC:%.c=build/rel/%.o)
REL_FSEXE_OBJ   := $(FS_EXE_SRC:%.c=build/rel/%.o)
SAN_PLANNER_OBJ := $(PLANNER_SRC:%.c=build/san/%.o)
SAN_FSLIB_OBJ   := $(FS_LIB_SRC:%.c=build/san/%.o)
SAN_FSEXE_OBJ   := $(FS_EXE_SRC:%.c=build/san/%.o)
UNIT_BIN        := $(UNIT_SRC:tests/unit/%.c=build/san/tests/%)

.PHONY: all deps deps-check test unit demo clean install bench fuzz
all: build/ckptfs build/libckptplanner.a build/libckptfs_fs.a

deps:
	@scripts/install-deps.sh

# Installs what the goals need (a demo needs no torch) before anything is compiled: every
# compile and link waits for it (order-only, so it never forces a rebuild), also under -j.
deps-check:
	@scripts/install-deps.sh --quiet $(MAKECMDGOALS)

build/rel/%.o: %.c $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $(CFLAGS_ALL) -c $< -o $@

build/san/%.o: %.c $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(CFLAGS_ALL) -c $< -o $@

# Library objects: the compiler's list of every header read (-MD, a by-product of the compile)
# must name no FUSE header, so the library stays linkable without a FUSE session.
FUSE_FREE_CHECK = if grep -qE '/fuse(_lowlevel)?\.h' $(@:.o=.d); then \
	echo "$<: includes <fuse.h>/<fuse_lowlevel.h>; list it in FS_FUSE_SRC" >&2; rm -f $@; exit 1; fi

$(REL_FSLIB_OBJ): build/rel/%.o: %.c $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(OPT) $(CFLAGS_ALL) -MD -c $< -o $@
	@$(FUSE_FREE_CHECK)

$(SAN_FSLIB_OBJ): build/san/%.o: %.c $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(CFLAGS_ALL) -MD -c $< -o $@
	@$(FUSE_FREE_CHECK)

build/libckptplanner.a: $(REL_PLANNER_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/san/libckptplanner.a: $(SAN_PLANNER_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/libckptfs_fs.a: $(REL_FSLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/san/libckptfs_fs.a: $(SAN_FSLIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The fs library before the planner: its objects call into the planner.
build/ckptfs: $(REL_FSEXE_OBJ) build/libckptfs_fs.a build/libckptplanner.a
	$(CC) $(OPT) -o $@ $(REL_FSEXE_OBJ) build/libckptfs_fs.a build/libckptplanner.a $(PKG_LIBS) $(LDFLAGS)

build/san/ckptfs: $(SAN_FSEXE_OBJ) build/san/libckptfs_fs.a build/san/libckptplanner.a
	$(CC) $(SANFLAGS) -o $@ $(SAN_FSEXE_OBJ) build/san/libckptfs_fs.a build/san/libckptplanner.a $(PKG_LIBS) $(LDFLAGS)

# FUSE-free fs/ objects a unit test links besides the planner: UNIT_FS_<test> (and the same
# objects as its prerequisites).
UNIT_FS_test_write_stream := build/san/fs/write_stream.o
build/san/tests/test_write_stream: $(UNIT_FS_test_write_stream)

build/san/tests/%: tests/unit/%.c build/san/libckptplanner.a $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(CFLAGS_ALL) -Itests/unit -o $@ $< $(UNIT_FS_$*) build/san/libckptplanner.a $(PKG_LIBS)

# Tests of fs/ code (test_fs_*.c) also link the fs library (the more specific pattern wins).
build/san/tests/test_fs_%: tests/unit/test_fs_%.c build/san/libckptfs_fs.a build/san/libckptplanner.a $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(CFLAGS_ALL) -Itests/unit -o $@ $< build/san/libckptfs_fs.a build/san/libckptplanner.a $(PKG_LIBS)

unit: $(UNIT_BIN)

test: build/ckptfs build/san/ckptfs $(UNIT_BIN) | deps-check
	@scripts/run-tests.sh

demo: all | deps-check
	@scripts/demo.sh

bench: all | deps-check
	@scripts/bench.sh

fuzz: | deps-check
	@scripts/fuzz.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/ckptfs
	install -m 755 build/ckptfs $(DESTDIR)$(PREFIX)/bin/ckptfs
	install -m 644 build/libckptplanner.a $(DESTDIR)$(PREFIX)/lib/libckptplanner.a
	install -m 644 planner/*.h $(DESTDIR)$(PREFIX)/include/ckptfs/
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 doc/ckptfs.1 $(DESTDIR)$(PREFIX)/share/man/man1/ckptfs.1

clean:
	rm -rf build
