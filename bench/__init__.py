"""varbench's harness: grids, measurement, tables, plots, reports and the command line."""
