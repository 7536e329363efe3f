-- Look up an expense KBK code by administrator and program together, because
-- two administrators may use the same program number. This script reads the
-- 12-digit code as functional group (2 digits), subfunction (1),
-- administrator (3), program (3) and subprogram (3).
SELECT code, name_ru, name_kk
FROM kbk
WHERE substr(code, 4, 3) = :administrator
  AND substr(code, 7, 3) = :program
ORDER BY code;
