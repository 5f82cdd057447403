"""The Kafka binding and the local dispatcher that emulates Knative KafkaSources."""
