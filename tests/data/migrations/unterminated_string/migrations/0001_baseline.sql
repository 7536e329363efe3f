INSERT INTO a VALUES ('never closed);
