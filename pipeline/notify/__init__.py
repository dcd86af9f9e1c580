"""Telling people a batch's report is ready: e-mail and webhook."""
