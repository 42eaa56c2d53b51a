// Reads rfload's interval log with HdrHistogram's own reader (the Java
// reference implementation, Debian's libhdrhistogram-java), adds the
// intervals up, and prints the total and the percentile distribution as
// HdrHistogram writes it (values in milliseconds), for check_hdr_java.sh
// to compare with rfload's .hgrm.
import org.HdrHistogram.EncodableHistogram;
import org.HdrHistogram.Histogram;
import org.HdrHistogram.HistogramLogReader;
import java.io.FileOutputStream;
import java.io.PrintStream;

public class HdrCheck {
    public static void main(String[] args) throws Exception {
        HistogramLogReader reader = new HistogramLogReader(args[0]);
        Histogram all = null;
        int intervals = 0;
        EncodableHistogram e;
        while ((e = reader.nextIntervalHistogram()) != null) {
            Histogram h = (Histogram) e;
            intervals++;
            if (all == null)
                all = h.copy();
            else
                all.add(h);
        }
        System.out.println(intervals + " " + all.getTotalCount());
        try (PrintStream out = new PrintStream(new FileOutputStream(args[1]))) {
            all.outputPercentileDistribution(out, 1000000.0);
        }
    }
}
