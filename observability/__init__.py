"""What the gateway tells operators about the traffic it serves, fed from one place: every invocation's
end (serving.invoke.finish), with the data of its usage record.

    metrics     Prometheus counters, histograms and gauges, served at /metrics (every worker of a
                start_server counted once: prometheus_client's multiprocess mode)
    tracing     an OpenTelemetry span per invocation (GenAI semantic conventions), exported over OTLP;
                off unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
    accesslog   one structured line per request on the logger `gateway.access`
"""
