# certmq developer commands. `make run` starts a demo broker, `make test` runs every test.
# Each set-up step is remembered by a stamp file and redone only when its inputs change.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH creates the virtualenv.
PYTHON ?= $(shell for candidate in python3 python3.13 python3.12 python3.11; do \
	if $$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	echo $$candidate; break; fi; done)
VENV := .venv
STAMPS := $(VENV)/.stamps
PIP := $(VENV)/bin/python -m pip --disable-pip-version-check --quiet
DATA_DIR ?= data
PYTEST_ARGS ?=
JS_DIR := tests/js
# Debian packages the tests use: the mosquitto broker and clients (interop), openssl (PKI checks),
# chromium (the console's browser tests; Playwright drives it, it never downloads a browser),
# nats-server (the cluster tests start a NATS cluster of their own).
DEBIAN_PACKAGES := mosquitto mosquitto-clients openssl chromium nats-server

.PHONY: help run test lint format bench bench-connections setup setup-test tools samples-tools samples-java samples-go clean

help:
	@echo "make run     start a demo broker in ./$(DATA_DIR) (anonymous clients allowed)"
	@echo "make test    set up everything the tests need, then run them"
	@echo "make lint    ruff check, ruff format --check, mypy"
	@echo "make format  ruff format and ruff check --fix"
	@echo "make bench   run the benchmarks (bench/run.py)"
	@echo "make bench-connections  CPU per mutual TLS connection vs mosquitto (bench/connections.py)"
	@echo "make clean   remove the virtualenv and caches (not ./$(DATA_DIR))"

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "certmq needs Python >= 3.11 on PATH (or PYTHON=/path/to/python3)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/runtime: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[test]'
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/runtime

$(STAMPS)/bench: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[test,bench]'
	@mkdir -p $(STAMPS) && touch $@ $(STAMPS)/test $(STAMPS)/runtime

setup: $(STAMPS)/runtime
setup-test: $(STAMPS)/test tools js samples-tools samples-js samples-java samples-go

# Debian tools: installed only when missing, and only when we may (root).
tools:
	@missing=""; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	{ command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto; } || missing="$$missing mosquitto"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	{ command -v nats-server >/dev/null || test -x /usr/sbin/nats-server; } || missing="$$missing nats-server"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
		else \
			echo "missing Debian packages:$$missing (the tests that use them will fail); install: sudo apt-get install$$missing" >&2; \
		fi; \
	fi

# npm dependencies of the MQTT.js tests, when there are any.
ifneq ($(wildcard $(JS_DIR)/package.json),)
js: $(JS_DIR)/node_modules/.installed
$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package.json $(wildcard $(JS_DIR)/package-lock.json)
	@if ! command -v npm >/dev/null; then echo "npm not found: the MQTT.js tests will fail; install Node.js and npm" >&2; exit 0; fi; \
	cd $(JS_DIR) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi \
	&& touch node_modules/.installed
else
js:
endif
.PHONY: js

# Toolchains of the client samples (samples/, run against certmq by tests/samples): gcc with
# Eclipse Paho C and OpenSSL's headers, a JDK and Maven, npm (with Node.js), Go. Debian packages,
# installed only when missing, and only when we may (root).
samples-tools:
	@missing=""; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	test -f /usr/include/MQTTClient.h || missing="$$missing libpaho-mqtt-dev"; \
	test -f /usr/include/openssl/hmac.h || missing="$$missing libssl-dev"; \
	command -v javac >/dev/null || missing="$$missing default-jdk-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v go >/dev/null || missing="$$missing golang"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		else \
			echo "missing Debian packages:$$missing (the sample tests that use them will fail); install: sudo apt-get install$$missing" >&2; \
		fi; \
	fi

# npm dependencies of the MQTT.js sample (its tests run the same `npm ci` once per session).
SAMPLES_JS := samples/javascript
samples-js: $(SAMPLES_JS)/node_modules/.installed
$(SAMPLES_JS)/node_modules/.installed: $(SAMPLES_JS)/package.json $(SAMPLES_JS)/package-lock.json
	@if ! command -v npm >/dev/null; then echo "npm not found: the JavaScript sample's tests will fail; install Node.js and npm" >&2; exit 0; fi; \
	npm ci --prefix $(SAMPLES_JS) --no-audit --no-fund && touch $@
.PHONY: samples-js

# The Java and Go samples' dependencies, fetched here so that no download happens while the
# sample tests run and are timed. Maven's dependency:go-offline leaves out what plugins load
# only when they run (surefire's plexus-utils, for one): the sample's own build fetches exactly
# what it needs, and its output is what the tests' build starts from.
SAMPLES_JAVA := samples/java
samples-java: $(STAMPS)/samples-java
$(STAMPS)/samples-java: $(SAMPLES_JAVA)/pom.xml
	@if ! command -v mvn >/dev/null; then echo "mvn not found: the Java sample's tests will fail; install Maven" >&2; exit 0; fi; \
	mvn -q -B -f $(SAMPLES_JAVA)/pom.xml package && mkdir -p $(STAMPS) && touch $@

SAMPLES_GO := samples/go
samples-go: $(STAMPS)/samples-go
$(STAMPS)/samples-go: $(SAMPLES_GO)/go.mod $(SAMPLES_GO)/go.sum
	@if ! command -v go >/dev/null; then echo "go not found: the Go sample's tests will fail; install Go" >&2; exit 0; fi; \
	(cd $(SAMPLES_GO) && go mod download) && mkdir -p $(STAMPS) && touch $@

run: $(STAMPS)/runtime
	@if [ -z "$${CERTMQ_AUTH_ANONYMOUS+set}" ]; then \
		echo "Demo: anonymous clients are allowed (CERTMQ_AUTH_ANONYMOUS=true). To require credentials: make run CERTMQ_AUTH_ANONYMOUS=false"; \
	fi
	@echo "Console: http://127.0.0.1:8080/console (unless [listeners] http says otherwise); log in with the admin token, admin_token in $(DATA_DIR)/credentials.json"
	CERTMQ_AUTH_ANONYMOUS=$${CERTMQ_AUTH_ANONYMOUS-true} exec $(VENV)/bin/certmq serve --demo --data-dir $(DATA_DIR)

test: setup-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMPS)/test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src
	$(VENV)/bin/mypy --strict src/certmq/broker

format: $(STAMPS)/test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMPS)/bench
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-connections: $(STAMPS)/bench
	$(VENV)/bin/python bench/connections.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info
	rm -rf samples/c/build samples/go/build samples/java/target samples/javascript/node_modules
