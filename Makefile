# ckptfs build.  `make` builds build/ckptfs and build/libckptplanner.a;
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
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
HEADERS     := $(wildcard planner/*.h fs/*.h tests/unit/*.h)

REL_PLANNER_OBJ := $(PLANNER_SRC:%.c=build/rel/%.o)
REL_FS_OBJ      := $(FS_SRC:%.c=build/rel/%.o)
SAN_PLANNER_OBJ := $(PLANNER_SRC:%.c=build/san/%.o)
SAN_FS_OBJ      := $(FS_SRC:%.c=build/san/%.o)
UNIT_BIN        := $(UNIT_SRC:tests/unit/%.c=build/san/tests/%)

.PHONY: all deps deps-check test unit demo clean install bench fuzz
all: build/ckptfs build/libckptplanner.a

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

build/libckptplanner.a: $(REL_PLANNER_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/san/libckptplanner.a: $(SAN_PLANNER_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/ckptfs: $(REL_FS_OBJ) build/libckptplanner.a
	$(CC) $(OPT) -o $@ $(REL_FS_OBJ) build/libckptplanner.a $(PKG_LIBS) $(LDFLAGS)

build/san/ckptfs: $(SAN_FS_OBJ) build/san/libckptplanner.a
	$(CC) $(SANFLAGS) -o $@ $(SAN_FS_OBJ) build/san/libckptplanner.a $(PKG_LIBS) $(LDFLAGS)

# FUSE-free fs/ objects a unit test links besides the planner: UNIT_FS_<test> (and the same
# objects as its prerequisites).
UNIT_FS_test_write_stream := build/san/fs/write_stream.o
build/san/tests/test_write_stream: $(UNIT_FS_test_write_stream)

build/san/tests/%: tests/unit/%.c build/san/libckptplanner.a $(HEADERS) | deps-check
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(CFLAGS_ALL) -Itests/unit -o $@ $< $(UNIT_FS_$*) build/san/libckptplanner.a $(PKG_LIBS)

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
