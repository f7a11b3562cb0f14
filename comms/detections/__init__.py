"""Community reports and monitoring alerts: detections, their entities and clusters."""
