"""Code shared by the pipelines and the service: settings, feature-store access, model folders."""
