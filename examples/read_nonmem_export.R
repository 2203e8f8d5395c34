# Read the NONMEM-style tables that `bayespk export RUN_DIR --format nonmem` writes, with base R only.
#
#   Rscript examples/read_nonmem_export.R runs/pheno/nonmem   # the folder export wrote
#   Rscript examples/read_nonmem_export.R runs/pheno          # or the run directory (its nonmem/ folder)
#
# sdtab, patab and run.ext are whitespace tables after a "TABLE NO.  1" title line, as NONMEM's $TABLE
# writes them: read.table(skip = 1, header = TRUE). colClasses keeps text IDs as written ("001" stays
# "001"; an ID holding a space is quoted in the file), check.names = FALSE keeps run.ext's names such as
# OMEGA(1,1). The script prints what it read (one "name<TAB>value" line each) and stops with an error
# naming the file and the column when a required column is missing. tests/evaluate/test_export_r.py runs it.
#
# With the tables read, e.g. ggplot2:
#   ggplot(sdtab, aes(PRED, DV)) + geom_point() + geom_abline()
#   ggplot(subset(sdtab, CENS == 0), aes(TIME, IWRES)) + geom_point() + geom_hline(yintercept = 0)

SDTAB_REQUIRED <- c("ID", "TIME", "TAD", "DV", "MDV", "DVID", "CENS", "BLQ", "PRED", "IPRED", "RES", "IWRES",
                    "EPRED", "ECWRES")
PATAB_REQUIRED <- c("ID")
EXT_REQUIRED <- c("ITERATION", "THETA1", "OBJ")
ESTIMATE <- -1000000000  # run.ext's ITERATION of the posterior medians (-1000000001: posterior SDs)

read_nm_table <- function(dir, name, required, text_id = TRUE) {
  path <- file.path(dir, name)
  if (!file.exists(path)) {
    stop(path, ": no such file; write it with `bayespk export RUN_DIR --format nonmem`", call. = FALSE)
  }
  classes <- if (text_id) c(ID = "character") else NA
  tab <- read.table(path, skip = 1, header = TRUE, check.names = FALSE, colClasses = classes)
  missing <- setdiff(required, names(tab))
  if (length(missing) > 0) {
    stop(path, ": required column", if (length(missing) > 1) "s", " missing: ", paste(missing, collapse = ", "),
         call. = FALSE)
  }
  tab
}

show <- function(name, values) cat(name, "\t", paste(values, collapse = "\t"), "\n", sep = "")

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) {
  stop("usage: Rscript read_nonmem_export.R DIR (the folder `bayespk export` wrote, or the run directory)",
       call. = FALSE)
}
dir <- args[1]
if (!file.exists(file.path(dir, "sdtab")) && file.exists(file.path(dir, "nonmem", "sdtab"))) {
  dir <- file.path(dir, "nonmem")
}

sdtab <- read_nm_table(dir, "sdtab", SDTAB_REQUIRED)
patab <- read_nm_table(dir, "patab", PATAB_REQUIRED)
ext <- read_nm_table(dir, "run.ext", EXT_REQUIRED, text_id = FALSE)

if (anyDuplicated(patab$ID)) stop(file.path(dir, "patab"), ": ID ", patab$ID[anyDuplicated(patab$ID)],
                                  " is on two rows", call. = FALSE)
unknown <- setdiff(sdtab$ID, patab$ID)
if (length(unknown) > 0) stop(file.path(dir, "sdtab"), ": ID ", unknown[1], " has no row in patab", call. = FALSE)
estimate <- ext[ext$ITERATION == ESTIMATE, , drop = FALSE]
if (nrow(estimate) != 1) stop(file.path(dir, "run.ext"), ": no single row with ITERATION ", ESTIMATE, call. = FALSE)
thetas <- grep("^THETA[0-9]+$", names(ext), value = TRUE)

show("sdtab_rows", nrow(sdtab))
show("sdtab_columns", names(sdtab))
show("sdtab_ids", unique(sdtab$ID))
show("sdtab_DV_sum", sprintf("%.17g", sum(sdtab$DV)))
show("patab_rows", nrow(patab))
show("patab_columns", names(patab))
show("patab_ids", patab$ID)
show("ext_rows", nrow(ext))
show("ext_columns", names(ext))
show("ext_theta_median", sprintf("%.17g", unlist(estimate[1, thetas])))
show("ext_OBJ_median", sprintf("%.17g", estimate$OBJ))
